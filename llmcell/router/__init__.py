"""Replica choice: policies are pure functions over a snapshot of a model's replicas."""

from llmcell.router.policies import POLICIES, make_policy
from llmcell.router.protocol import Policy, RouteRequest

__all__ = ["POLICIES", "Policy", "RouteRequest", "make_policy"]
