"""Chat completions as Responses API objects: a whole answer as a `response` with its output
items, and a chat stream's chunks as the Responses stream's typed events (`response.created`,
`response.output_text.delta`, ..., `response.completed`), in the order OpenAI documents. Pure:
gateway/responses_routes.py does the I/O."""

from __future__ import annotations

import json
import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def usage_of(chat_usage: dict | None) -> dict | None:
    if not chat_usage:
        return None
    inp, out = chat_usage.get("prompt_tokens", 0), chat_usage.get("completion_tokens", 0)
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": inp + out}


def response_object(rid: str, created: int, model: str, echo: dict, output: list[dict],
                    usage: dict | None, finish_reason: str | None,
                    status: str | None = None) -> dict:
    incomplete = finish_reason == "length"
    status = status or ("incomplete" if incomplete else "completed")
    return {"id": rid, "object": "response", "created_at": created, "status": status,
            "error": None, "model": model, "output": output, "usage": usage,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            **echo}


def message_item(text: str, status: str = "completed", item_id: str | None = None) -> dict:
    return {"type": "message", "id": item_id or new_id("msg"), "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def call_item(call: dict, status: str = "completed", item_id: str | None = None) -> dict:
    fn = call.get("function") or {}
    return {"type": "function_call", "id": item_id or new_id("fc"), "status": status,
            "call_id": call.get("id") or new_id("call"), "name": fn.get("name", ""),
            "arguments": fn.get("arguments", "")}


def assistant_message(output: list[dict]) -> dict:
    """The output items as the chat message a follow-up's conversation holds."""
    text = "".join(p["text"] for item in output if item["type"] == "message"
                   for p in item["content"])
    calls = [{"id": i["call_id"], "type": "function",
              "function": {"name": i["name"], "arguments": i["arguments"]}}
             for i in output if i["type"] == "function_call"]
    message: dict = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def from_completion(rid: str, created: int, echo: dict, completion: dict) -> dict:
    choice = completion["choices"][0]
    msg = choice.get("message") or {}
    output = []
    if msg.get("content"):
        output.append(message_item(msg["content"]))
    output += [call_item(c) for c in msg.get("tool_calls") or []]
    return response_object(rid, created, completion.get("model", ""), echo, output,
                           usage_of(completion.get("usage")), choice.get("finish_reason"))


def sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


class StreamConverter:
    """Chat chunks in, Responses events out (each with its `sequence_number`)."""

    def __init__(self, rid: str, created: int, model: str, echo: dict) -> None:
        self.rid, self.created, self.model, self.echo = rid, created, model, echo
        self.output: list[dict] = []
        self._seq = 0
        self._text: dict | None = None  # the open message item
        self._calls: dict[int, dict] = {}  # chat tool-call index -> open function_call item
        self._usage: dict | None = None
        self._finish: str | None = None
        self.response: dict | None = None
        """The whole response, once `finish` made it."""

    def _event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _snapshot(self, status: str) -> dict:
        return response_object(self.rid, self.created, self.model, self.echo,
                               list(self.output), self._usage, self._finish, status)

    def start(self) -> list[dict]:
        return [self._event("response.created", response=self._snapshot("in_progress")),
                self._event("response.in_progress", response=self._snapshot("in_progress"))]

    def feed(self, chunk: dict) -> list[dict]:
        events: list[dict] = []
        if chunk.get("usage"):
            self._usage = usage_of(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def _text_delta(self, text: str) -> list[dict]:
        events = []
        if self._text is None:
            self._text = message_item("", "in_progress")
            self.output.append(self._text)
            index = len(self.output) - 1
            events.append(self._event("response.output_item.added", output_index=index,
                                      item=self._text))
            events.append(self._event("response.content_part.added", item_id=self._text["id"],
                                      output_index=index, content_index=0,
                                      part={"type": "output_text", "text": "",
                                            "annotations": []}))
        self._text["content"][0]["text"] += text
        events.append(self._event("response.output_text.delta", item_id=self._text["id"],
                                  output_index=self.output.index(self._text), content_index=0,
                                  delta=text, logprobs=[]))
        return events

    def _call_delta(self, call: dict) -> list[dict]:
        events = []
        item = self._calls.get(call.get("index", 0))
        if item is None:
            item = call_item({"id": call.get("id"), "function": {
                "name": (call.get("function") or {}).get("name", ""), "arguments": ""}},
                "in_progress")
            self._calls[call.get("index", 0)] = item
            self.output.append(item)
            events.append(self._event("response.output_item.added",
                                      output_index=len(self.output) - 1, item=dict(item)))
        piece = (call.get("function") or {}).get("arguments") or ""
        if piece:
            item["arguments"] += piece
            events.append(self._event("response.function_call_arguments.delta",
                                      item_id=item["id"], output_index=self.output.index(item),
                                      delta=piece))
        return events

    def finish(self) -> list[dict]:
        events = []
        for index, item in enumerate(self.output):
            item["status"] = "completed"
            if item["type"] == "message":
                part = item["content"][0]
                events.append(self._event("response.output_text.done", item_id=item["id"],
                                          output_index=index, content_index=0,
                                          text=part["text"], logprobs=[]))
                events.append(self._event("response.content_part.done", item_id=item["id"],
                                          output_index=index, content_index=0, part=part))
            else:
                events.append(self._event("response.function_call_arguments.done",
                                          item_id=item["id"], output_index=index,
                                          arguments=item["arguments"]))
            events.append(self._event("response.output_item.done", output_index=index,
                                      item=item))
        final = self._snapshot("incomplete" if self._finish == "length" else "completed")
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        events.append(self._event(kind, response=final))
        self.response = final
        return events

    def failed(self, error: dict) -> list[dict]:
        response = self._snapshot("failed")
        response["error"] = {"code": error.get("code") or "server_error",
                             "message": error.get("message", "")}
        return [self._event("response.failed", response=response)]
