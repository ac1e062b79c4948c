"""A model server tells the gateways what its prefix cache holds: `/cell/tokenizer` and
`/cell/kv_events` on a real server, checked against what it tokenizes and caches."""

from __future__ import annotations

import threading
import time

import httpx

from llmcell.protocol.kv_events import HASH_SCHEME, KVEventBatch, prompt_block_keys
from llmcell.tokenizer.prompts import chat_prompt_ids
from llmcell.tokenizer.tokenizer import Tokenizer

MESSAGES = [{"role": "system", "content": "You answer questions about the sea. " * 12},
            {"role": "user", "content": "Why is the sea salty? (prefix routes test)"}]


def events(server, **params) -> KVEventBatch:
    r = httpx.get(server.url + "/cell/kv_events", params=params, timeout=30)
    assert r.status_code == 200, r.text
    return KVEventBatch.from_json(r.json())


def test_the_gateway_tokenizes_as_the_server_does(server):
    r = httpx.get(server.url + "/cell/tokenizer")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["hash_scheme"] == HASH_SCHEME and data["block_size"] == 16
    tk = Tokenizer.from_spec(data["tokenizer"])
    served = httpx.post(server.url + "/tokenize", json={"messages": MESSAGES}).json()["tokens"]
    assert chat_prompt_ids(tk, MESSAGES, True) == served


def test_kv_events_carry_the_blocks_a_request_cached(server, client):
    start = events(server)
    assert start.snapshot is not None and start.block_size == 16
    ids = httpx.post(server.url + "/tokenize", json={"messages": MESSAGES}).json()["tokens"]
    keys = prompt_block_keys(ids, 16)
    assert len(keys) >= 4 and not set(keys) & set(start.snapshot)

    answer: list[KVEventBatch] = []
    waiting = threading.Thread(target=lambda: answer.append(
        events(server, since=start.seq, epoch=start.epoch, wait=10)))
    began = time.monotonic()
    waiting.start()
    time.sleep(0.3)
    client.chat.completions.create(model="smollm2-135m-instruct", messages=MESSAGES, max_tokens=4,
                                   temperature=0)
    waiting.join(30)
    assert time.monotonic() - began < 9, "the long poll did not answer when the cache changed"
    batch = answer[0]
    assert batch.snapshot is None and batch.epoch == start.epoch and batch.first == start.seq + 1
    stored = [e.key for e in batch.events if e.stored]
    assert stored[:len(keys)] == keys  # the prompt's full blocks, in order

    now = events(server, since=0)  # a snapshot holds them too
    assert set(keys) <= set(now.snapshot)
    quiet = time.monotonic()
    assert events(server, since=now.seq, epoch=now.epoch, wait=0.5).events == ()
    assert time.monotonic() - quiet >= 0.4


def test_bad_parameters_are_refused(server):
    for params, field in [({"since": "x"}, "since"), ({"since": "-1"}, "since"),
                          ({"wait": "soon"}, "wait")]:
        r = httpx.get(server.url + "/cell/kv_events", params=params)
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    r = httpx.get(server.url + "/cell/kv_events", params={"model": "nope"})
    assert r.status_code == 404, r.text
