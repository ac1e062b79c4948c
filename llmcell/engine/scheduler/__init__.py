"""Scheduler: decides each step's work (`schedule()` -> plan) and applies its results (`update()`)."""

from llmcell.engine.scheduler.plan import ScheduledChunk, SchedulerPlan, StepResult, SampledToken
from llmcell.engine.scheduler.scheduler import Scheduler

__all__ = ["Scheduler", "SchedulerPlan", "ScheduledChunk", "StepResult", "SampledToken"]
