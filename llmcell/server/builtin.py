"""Built-in backend: llmcell's own engine behind the OpenAI API (its core in a process of its
own by default, see engine/process.py; on a thread for a multi-host group).

Prepares prompts (chat template, tokenization, context-window check), admits requests through a
bounded queue (429 beyond it), runs them on the async engine and shapes the outputs as OpenAI
responses or SSE chunks. Leaving a stream early aborts the engine request, freeing its blocks.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import AsyncIterator

from llmcell.config.server import ServerConfig
from llmcell.engine import AsyncEngine, EngineDeadError
from llmcell.engine.async_engine import EngineClient, RequestStream
from llmcell.tokenizer.chat_template import ChatTemplateError
from llmcell.tokenizer.prompts import chat_prompt_ids, completion_prompt_ids
from llmcell.engine.outputs import RequestOutput, Resume
from llmcell.engine.process import ProcessEngine
from llmcell.protocol.errors import APIError, invalid
from llmcell.protocol.lora import AdapterRef
from llmcell.protocol.openai import (CONTINUATION, ChatRequest, CompletionRequest, Continuation,
                                    usage)
from llmcell.protocol.sampling import ContextLengthError, SamplingParams, check_request
from llmcell.server.guide_check import GuideChecker
from llmcell.server import responses as R
from llmcell.server.backend import Load, PrefixCacheSource, Reply
from llmcell.server.metrics import ServerMetrics
from llmcell.server.streams import Stream, chat_events, completion_events
from llmcell.edge.sse import DONE, event


class BuiltinBackend:
    def __init__(self, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.model_name = config.model_name
        self.source = config.engine_config.model
        """The model it serves (its card's `root`)."""
        self.max_model_len = 0
        self.engine: EngineClient | None = None
        self._ready = False
        self._collector = None
        self._in_flight = 0
        self._limit = config.engine_config.max_num_seqs + config.max_queue
        self._guides: GuideChecker | None = None

    # ---- life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.config.engine_process and self.config.group.size == 1:
            self.engine = await ProcessEngine.start(self.config.engine_config,
                                                    self.config.engine_nice,
                                                    self.config.engine_idle)
        else:
            core = await asyncio.get_running_loop().run_in_executor(None, self._load)
            self.engine = AsyncEngine(core)  # a group's leader: its core drives the workers
        self.max_model_len = self.engine.max_model_len
        self._guides = GuideChecker(self.engine.tokenizer, self.engine.vocab_size, self.metrics,
                                    self.model_name)
        self._collector = self.metrics.bind_engine(self.engine, self.model_name)
        async for _ in self.engine.generate([1, 2, 3], SamplingParams(max_tokens=2), "warmup"):
            pass
        self._ready = True

    def _load(self):
        """The engine's core on a thread of this process (torch is imported here, not before);
        as a group's leader, after the whole group joined (workers load their shards at the same
        time)."""
        from llmcell.engine.core import EngineCore
        from llmcell.engine.parallel.group import announce_load, group_joined, join_group

        g = self.config.group
        if g.size == 1:
            return EngineCore(self.config.engine_config)
        if not group_joined():
            print(f"llmcell server: leading a group of {g.size}; waiting for the workers on "
                  f"{g.leader}:{g.port}...", file=sys.stderr, flush=True)
        tp = join_group(0, g.size, g.leader, g.port, g.timeout)
        announce_load(self.config.engine_config.model)
        return EngineCore(self.config.engine_config, None, tp)

    async def stop(self) -> None:
        self._ready = False
        self.metrics.unbind(self._collector)
        self._collector = None
        if self.engine is not None:
            await self.engine.aclose()
            if self.config.group.size > 1 and not self.engine.failed:
                from llmcell.engine.parallel.group import announce_unload

                try:
                    announce_unload()
                except RuntimeError:
                    pass  # a member is gone: the group is broken and restarts anyway

    def prefix_cache(self) -> PrefixCacheSource | None:
        if not self._ready or self.engine is None:
            return None
        return PrefixCacheSource(self.engine.kv_events, self.engine.tokenizer)

    def load(self) -> Load:
        if self.engine is None:
            return Load(0, 0, 0.0, False)
        s = self.engine.stats()
        return Load(s.num_running, s.num_waiting, s.kv_cache_usage,
                    self._ready and self.engine.is_alive, self.config.engine_config.max_num_seqs)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ---- helpers -----------------------------------------------------------------------------------
    def _check_ready(self) -> EngineClient:
        if not self._ready or self.engine is None:
            raise APIError(503, "the model is still loading; retry when /ready answers 200",
                           headers={"Retry-After": "1"})
        if not self.engine.is_alive:
            raise APIError(503, "the engine has failed; this server must be restarted")
        return self.engine

    def _admit(self) -> None:
        if self._in_flight >= self._limit:
            raise APIError(429, f"the server is at capacity ({self._in_flight} requests running "
                                f"or queued, limit {self._limit}); retry shortly",
                           code="queue_full", headers={"Retry-After": "1"})

    def _fit(self, prompt: list[int], params: SamplingParams, param: str) -> SamplingParams:
        """`params` for this prompt (`max_tokens` resolved), or a 400 naming `param`."""
        try:
            return check_request(prompt, params, self.engine.vocab_size, self.max_model_len)
        except ContextLengthError as e:
            raise APIError(400, str(e), param=param, code="context_length_exceeded") from None
        except ValueError as e:
            raise invalid(str(e), param) from None

    def _chat_prompt(self, req: ChatRequest) -> list[int]:
        try:
            return chat_prompt_ids(self.engine.tokenizer, req.messages, req.add_generation_prompt,
                                   req.tool_dicts())
        except ChatTemplateError as e:
            raise invalid(str(e), "messages") from None

    def _completion_prompt(self, prompt: str | list[int]) -> list[int]:
        return completion_prompt_ids(self.engine.tokenizer, prompt)

    async def _run(self, prompt: list[int], params: SamplingParams, rid: str,
                   resume: Continuation | None = None, adapter: AdapterRef | None = None
                   ) -> AsyncIterator[RequestOutput]:
        """Engine outputs for one prompt, with metrics recorded when it finishes."""
        stream = self._submit(prompt, params, rid, resume, adapter)
        try:
            async for out in self._outputs(stream, adapter):
                yield out
        finally:
            stream.close()

    def _submit(self, prompt: list[int], params: SamplingParams, rid: str,
                resume: Continuation | None = None,
                adapter: AdapterRef | None = None) -> RequestStream:
        """Queue the request; `resume`: it goes on from the tokens another replica generated."""
        if resume is not None and len(resume.token_ids) >= params.max_tokens:
            raise invalid(f"the continuation has {len(resume.token_ids)} tokens already, "
                          f"max_tokens={params.max_tokens}: nothing is left to generate",
                          CONTINUATION)
        try:
            return self.engine.submit(prompt, params, rid, None if resume is None else Resume(
                resume.token_ids, resume.emitted_chars), adapter)
        except EngineDeadError as e:
            raise APIError(503, str(e)) from None

    async def _outputs(self, stream: RequestStream,
                       adapter: AdapterRef | None = None) -> AsyncIterator[RequestOutput]:
        last = None
        try:
            async for out in stream:
                last = out
                yield out
        except ValueError as e:  # the engine refused it after queueing (an adapter that failed)
            raise APIError(400, str(e)) from None
        if last is not None and last.finished:
            self.metrics.observe_request(self.model_name if adapter is None else adapter.name,
                                         last)

    async def warm_adapter(self, adapter: AdapterRef) -> None:
        """Run one token with `adapter`: its weights load and are checked against this model
        (ValueError naming what does not fit)."""
        self._check_ready()
        stream = self.engine.submit([1, 2, 3], SamplingParams(max_tokens=1),
                                    f"warm-{uuid.uuid4().hex}", None, adapter)
        try:
            async for _ in stream:
                pass
        finally:
            stream.close()

    def adapter_resident(self, adapter: str) -> bool:
        """Whether the engine holds `adapter`'s weights now."""
        if self.engine is None:
            return False
        return any(name == adapter and held for name, *_, held in self.engine.stats().adapters)

    def _streaming(self, body: AsyncIterator[bytes], streams: list[RequestStream]) -> Reply:
        """A streamed reply over requests already submitted (prefill starts while the response
        does): in flight until the response closes them."""
        self._in_flight += 1

        def close() -> None:
            for stream in streams:
                stream.close()
            self._in_flight -= 1

        return Reply(stream=self._guard(body), close=close)

    # ---- chat ----------------------------------------------------------------------------------------
    async def chat(self, req: ChatRequest, raw: dict, adapter: AdapterRef | None = None) -> Reply:
        """`adapter`: run with this LoRA adapter of the model (answering under its name)."""
        self._check_ready()
        name = self.model_name if adapter is None else adapter.name
        prompt = self._chat_prompt(req)
        params = self._fit(prompt, req.sampling, "messages")
        self._admit()
        await self._guides.check(params.guided)
        tools = req.tools.names() if req.tools is not None else None
        failed = self._guides.tool_failures
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if req.stream:
            stream = self._submit(prompt, params, rid, req.continuation, adapter)
            body = chat_events(self._outputs(stream, adapter), Stream(
                rid, created, name, params.n, req.include_usage,
                req.return_token_ids), tools, failed)
            return self._streaming(body, [stream])
        self._in_flight += 1
        try:
            final = None
            async for out in self._run(prompt, params, rid, req.continuation, adapter):
                final = out
        except EngineDeadError as e:
            raise APIError(503, str(e)) from None
        finally:
            self._in_flight -= 1
        choices = []
        for o in final.outputs:
            choice, failures = R.chat_choice(o.index, o, req.return_token_ids, tools)
            failed(failures)
            choices.append(choice)
        return Reply(body={"id": rid, "object": "chat.completion", "created": created,
                           "model": name, "choices": choices,
                           "usage": usage(len(prompt), final.num_generated_tokens),
                           "timings": R.timings(final.metrics)})

    async def _guard(self, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """If the engine fails: a 503 before the first chunk (the response has not started), else
        an error event ending the stream."""
        started = False
        try:
            async for chunk in stream:
                started = True
                yield chunk
        except EngineDeadError as e:
            if not started:
                raise APIError(503, str(e)) from None
            yield event(APIError(503, str(e)).body()) + DONE

    # ---- completions ---------------------------------------------------------------------------------
    async def complete(self, req: CompletionRequest, raw: dict,
                       adapter: AdapterRef | None = None) -> Reply:
        self._check_ready()
        name = self.model_name if adapter is None else adapter.name
        prompts = [self._completion_prompt(p) for p in req.prompts]
        params = [self._fit(p, req.sampling, "prompt") for p in prompts]
        self._admit()
        await self._guides.check(req.sampling.guided)
        rid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        echoes = [self.engine.tokenizer.decode(p) if req.echo else "" for p in prompts]
        if req.stream:
            streams = []
            try:
                for i, (p, q) in enumerate(zip(prompts, params)):
                    streams.append(self._submit(p, q, f"{rid}-{i}", req.continuation, adapter))
            except BaseException:
                for stream in streams:
                    stream.close()
                raise
            body = completion_events(
                [self._outputs(s, adapter) for s in streams],
                Stream(rid, created, name, req.sampling.n, req.include_usage,
                       req.return_token_ids),
                echoes if req.echo else None, sum(len(p) for p in prompts))
            return self._streaming(body, streams)
        self._in_flight += 1
        try:
            finals = await asyncio.gather(*[self._last(p, q, f"{rid}-{i}", req.continuation,
                                                       adapter)
                                            for i, (p, q) in enumerate(zip(prompts, params))])
        except EngineDeadError as e:
            raise APIError(503, str(e)) from None
        finally:
            self._in_flight -= 1
        n = req.sampling.n
        choices = [R.completion_choice(i * n + o.index, o, echoes[i], req.return_token_ids)
                   for i, f in enumerate(finals) for o in f.outputs]
        gen = sum(f.num_generated_tokens for f in finals)
        return Reply(body={"id": rid, "object": "text_completion", "created": created,
                           "model": name, "choices": choices,
                           "usage": usage(sum(len(p) for p in prompts), gen)})

    async def _last(self, prompt, params, rid, resume=None, adapter=None) -> RequestOutput:
        final = None
        async for out in self._run(prompt, params, rid, resume, adapter):
            final = out
        return final

    # ---- tokenizer endpoints ---------------------------------------------------------------------------
    async def tokenize(self, raw: dict) -> Reply:
        self._check_ready()
        tk = self.engine.tokenizer
        if "messages" in raw:
            from llmcell.protocol.openai import parse_chat

            ids = self._chat_prompt(parse_chat({"model": self.model_name, **raw}))
        else:
            prompt = raw.get("prompt")
            if not isinstance(prompt, str):
                raise invalid("'prompt' must be a string (or give 'messages')", "prompt")
            add = raw.get("add_special_tokens", True)
            if not isinstance(add, bool):
                raise invalid("'add_special_tokens' must be a boolean", "add_special_tokens")
            ids = tk.encode(prompt, add_special_tokens=add)
        return Reply(body={"tokens": ids, "count": len(ids), "max_model_len": self.max_model_len})

    async def detokenize(self, raw: dict) -> Reply:
        self._check_ready()
        tokens = raw.get("tokens")
        vocab = self.engine.vocab_size
        if not isinstance(tokens, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in tokens):
            raise invalid(f"'tokens' must be a list of token ids in [0, {vocab})", "tokens")
        return Reply(body={"prompt": self.engine.tokenizer.decode(tokens,
                                                                  skip_special_tokens=False)})
