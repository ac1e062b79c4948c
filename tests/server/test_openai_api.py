"""The official `openai` client against a real llmcell server: chat, completions, streaming."""

from __future__ import annotations

import asyncio

import httpx
from openai import AsyncOpenAI

from tests.server.conftest import MODEL

Q = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_sync(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=24, temperature=0)
    assert r.object == "chat.completion" and r.model == MODEL
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 10 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_async_concurrent(server):
    async def main():
        c = AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        rs = await asyncio.gather(*[c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Say the number {i}."}],
            max_tokens=12, temperature=0) for i in range(6)])
        await c.close()
        return rs

    rs = asyncio.run(main())
    assert len(rs) == 6 and all(r.choices[0].message.content for r in rs)


def test_chat_stream_matches_non_stream(client):
    full = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=30, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=Q, max_tokens=30,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == full.choices[0].finish_reason and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == \
        full.usage.completion_tokens


def test_stream_is_openai_sse_ending_with_done(server):
    body = {"model": MODEL, "messages": Q, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_completions_forms(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                  temperature=0)
    assert r.object == "text_completion" and r.choices[0].text
    many = client.completions.create(model=MODEL, prompt=["One, two,", "Red, green,"],
                                     max_tokens=4, temperature=0)
    assert [c.index for c in many.choices] == [0, 1]
    ids = client.completions.create(model=MODEL, prompt=[504, 3458, 282, 4649, 314], max_tokens=4,
                                    temperature=0)
    assert ids.usage.prompt_tokens == 5
    echo = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=3, echo=True,
                                     temperature=0)
    assert echo.choices[0].text.startswith("Hello there")


def test_completions_stream(client):
    chunks = list(client.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=10,
                                            temperature=0, stream=True))
    full = client.completions.create(model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=10,
                                     temperature=0)
    assert "".join(c.choices[0].text for c in chunks) == full.choices[0].text
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason


def test_n_choices(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=10, n=3,
                                       temperature=1.0, seed=7)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) > 1


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=5, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob >= item.top_logprobs[-1].logprob
        assert item.token == item.top_logprobs[0].token  # greedy picks the most likely


def test_completion_logprobs(client):
    r = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=4, temperature=0,
                                  logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == 4
    assert all(len(t) == 2 for t in lp.top_logprobs)


def test_stop_string(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=30, temperature=0,
                                       stop=["Paris"])
    assert "Paris" not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_seed_reproducible(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me a short story."}],
              max_tokens=24, temperature=1.0, seed=42)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_vllm_sampling_extras(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=8, temperature=0.7,
                                       extra_body={"top_k": 20, "min_p": 0.05,
                                                   "repetition_penalty": 1.1})
    assert r.choices[0].message.content is not None


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_tokenize_detokenize(server):
    t = httpx.post(server.url + "/tokenize", json={"prompt": "Hello world"}).json()
    assert t["count"] == len(t["tokens"]) > 0
    d = httpx.post(server.url + "/detokenize", json={"tokens": t["tokens"]}).json()
    assert d["prompt"] == "Hello world"
    chat = httpx.post(server.url + "/tokenize", json={"messages": Q}).json()
    assert chat["count"] > t["count"]


def test_health_ready_metrics(server):
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/ready").json()["status"] == "ready"
    # one request of its own, so the histograms have a series whatever ran before
    r = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": "smollm2-135m-instruct", "messages": Q, "max_tokens": 2})
    assert r.status_code == 200
    text = httpx.get(server.url + "/metrics").text
    for name in ("llmcell:num_requests_running", "llmcell:num_requests_waiting",
                 "llmcell:prompt_tokens_total", "llmcell:generation_tokens_total",
                 "llmcell:time_to_first_token_seconds_bucket"):
        assert name in text, name
