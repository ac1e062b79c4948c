"""Placement as a pure function: distinct servers, memory fit, pending replicas, adoption,
rolling checkpoint updates."""

from llmcell.admin.placement import Holding, ModelSpec, ServerSlot, place
from llmcell.protocol.cell import Assignment

GB = 1 << 30
M = ModelSpec("/sax/test/m", "smollm2-135m-instruct", "None", 2, GB)


def holders(plan, model="/sax/test/m"):
    return sorted(sid for sid, assigned in plan.items() for a in assigned if a.model == model)


def test_replicas_go_to_distinct_servers_with_room():
    plan = place([M], [ServerSlot("a", 4 * GB), ServerSlot("b", 4 * GB), ServerSlot("c", GB // 2)])
    assert holders(plan) == ["a", "b"]


def test_replicas_without_room_stay_pending_until_capacity_appears():
    spec = ModelSpec("/sax/test/m", "x", "None", 3, GB)
    servers = [ServerSlot("a", GB), ServerSlot("b", GB)]
    plan = place([spec], servers)
    assert holders(plan) == ["a", "b"]
    held = [ServerSlot(sid, GB, tuple(Holding(a, True, GB) for a in plan[sid])) for sid in plan]
    plan = place([spec], held + [ServerSlot("c", GB)])
    assert holders(plan) == ["a", "b", "c"]


def test_memory_is_shared_between_models_on_one_server():
    other = ModelSpec("/sax/test/other", "x", "None", 1, GB)
    plan = place([M, other], [ServerSlot("a", 2 * GB), ServerSlot("b", GB)])
    assert sum(len(v) for v in plan.values()) == 3
    assert len(plan["a"]) == 2


def test_existing_replicas_are_kept_and_extras_trimmed():
    one = ModelSpec("/sax/test/m", "x", "None", 1, GB)
    a = one.assignment
    servers = [ServerSlot("a", 4 * GB, (Holding(a, True, GB),)),
               ServerSlot("b", 4 * GB, (Holding(a, False, GB),))]
    plan = place([one], servers)
    assert holders(plan) == ["a"]  # the ready one stays


def test_unpublished_models_are_dropped():
    stale = Assignment("/sax/test/gone", "x", "None")
    plan = place([M], [ServerSlot("a", 4 * GB, (Holding(stale, True, GB),))])
    assert plan["a"] == (M.assignment,)


def test_adoption_only_while_new_placement_is_held_back():
    a = M.assignment
    plan = place([M], [ServerSlot("a", 4 * GB, (Holding(a, True, GB),)), ServerSlot("b", 4 * GB)],
                 allow_new=False)
    assert holders(plan) == ["a"]


def test_refused_and_incapable_servers_are_skipped():
    servers = [ServerSlot("a", 4 * GB, refused=frozenset({M.assignment})),
               ServerSlot("b", 4 * GB, models=("other-model",)), ServerSlot("c", 4 * GB)]
    assert holders(place([M], servers)) == ["c"]


def test_rolling_update_surges_one_and_never_drops_ready_replicas_first():
    old = M.assignment
    new_spec = ModelSpec(M.model, M.model_path, "/ckpt/v2.gguf", 2, GB)
    new = new_spec.assignment
    servers = [ServerSlot("a", 2 * GB, (Holding(old, True, GB),)),
               ServerSlot("b", 2 * GB, (Holding(old, True, GB),)), ServerSlot("c", 2 * GB)]
    plan = place([new_spec], servers)
    assert sorted(plan) == ["a", "b", "c"] and plan["c"] == (new,)
    assert plan["a"] == (old,) and plan["b"] == (old,)  # both old replicas still serve
    # while the new one loads, nothing else moves
    servers[2] = ServerSlot("c", 2 * GB, (Holding(new, False, GB),))
    assert place([new_spec], servers) == plan
    # once it is ready, one old replica goes and the next new one is placed
    servers[2] = ServerSlot("c", 2 * GB, (Holding(new, True, GB),))
    plan = place([new_spec], servers)
    assert sum(a == old for v in plan.values() for a in v) == 1
    assert sum(a == new for v in plan.values() for a in v) == 2


def test_adapters_go_only_where_their_base_is_and_leave_with_it():
    base = ModelSpec("/sax/test/m", "smollm2-135m-instruct", "None", 2, GB)
    lora = ModelSpec("/sax/test/a", "/adapters/a", "None", 3, GB // 100, base="/sax/test/m")
    servers = [ServerSlot(s, 4 * GB) for s in "abc"]
    plan = place([lora, base], servers)  # the adapter sorts first by name: bases place first
    assert len(holders(plan)) == 2
    assert holders(plan, "/sax/test/a") == holders(plan)  # 3 wanted, 2 servers hold the base
    assert all(a.base == "/sax/test/m" for hs in plan.values() for a in hs
               if a.model == "/sax/test/a")
    # the base moves off a server: its adapter is not kept there
    held = [ServerSlot(sid, 4 * GB, tuple(Holding(a, True, 1) for a in plan[sid])) for sid in plan]
    fewer = ModelSpec("/sax/test/m", "smollm2-135m-instruct", "None", 1, GB)
    plan = place([lora, fewer], held)
    assert holders(plan, "/sax/test/a") == holders(plan) and len(holders(plan)) == 1
