"""KV-aware routing on a real cell: two servers publish their prefix-cache events, a gateway with
`--policy kv_affinity` follows them and sends each prompt to the replica that caches its prefix
(whatever its prefix hash says), and forgets a replica's blocks when its server restarts."""

from __future__ import annotations

import re
import time

import httpx

from tests.cell.conftest import SAX

PROMPTS = [f"Document {i}: " + " ".join(f"{w}{i}" for w in
                                          ("alpha", "river", "stone", "cloud", "lantern")) * 20
           for i in range(6)]


def metric(cell, name: str, **labels) -> float:
    text = httpx.get(cell.gateway.url + "/metrics").text
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def complete(url: str, prompt: str) -> httpx.Response:
    r = httpx.post(url + "/v1/completions", json={"model": SAX, "prompt": prompt, "max_tokens": 1,
                                                   "temperature": 0}, timeout=120)
    assert r.status_code == 200, r.text
    return r


def test_prompts_follow_the_cached_prefix_and_a_restart_forgets_it(cell):
    cell.start_admin()
    servers = {"a": cell.start_server("a"), "b": cell.start_server("b")}
    cell.start_gateway("--policy", "kv_affinity")
    cell.publish(2)
    cell.wait_active(2)
    wait_for(lambda: metric(cell, "llmcell:gateway_kv_tokenizer_loaded", model=SAX) == 1,
             "the gateway fetched the tokenizer")
    wait_for(lambda: {r for r in "ab" if re.search(
        rf'llmcell:gateway_kv_index_blocks{{model="{SAX}",replica="{r}"}}',
        httpx.get(cell.gateway.url + "/metrics").text)} == {"a", "b"},
             "the gateway follows both replicas")

    for i, prompt in enumerate(PROMPTS):  # warm each prompt on one server, skipping the gateway
        name = "ab"[i % 2]
        before = metric(cell, "llmcell:gateway_kv_index_blocks", replica=name)
        complete(servers[name].url, prompt)
        wait_for(lambda: metric(cell, "llmcell:gateway_kv_index_blocks", replica=name)
                 >= before + 4, f"the gateway heard of {name}'s new blocks")
    for i, prompt in enumerate(PROMPTS):
        r = complete(cell.gateway.url, prompt + " And then?")
        assert r.headers["X-Llmcell-Replica"] == "ab"[i % 2], i
    assert metric(cell, "llmcell:gateway_kv_routing_total", outcome="cached") == len(PROMPTS)

    servers["b"].kill9()  # b comes back with an empty cache under a new epoch
    servers["b"].start()
    servers["b"].wait()
    cell.wait_active(2)
    wait_for(lambda: metric(cell, "llmcell:gateway_kv_index_blocks", replica="b") == 0,
             "b's blocks were forgotten")
    uncached = metric(cell, "llmcell:gateway_kv_routing_total", outcome="uncached")
    complete(cell.gateway.url, PROMPTS[1] + " Once more.")  # only b had cached it
    assert metric(cell, "llmcell:gateway_kv_routing_total", outcome="uncached") == uncached + 1
