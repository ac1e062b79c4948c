"""Envoy's External Processing (ext_proc) protocol as the Gateway API Inference Extension's Endpoint
Picker speaks it (its proposal 004): one gRPC stream per HTTP request, the request's headers and
body in, the picked endpoints out.

- The body arrives whole (`BUFFERED`) or in chunks (`FULL_DUPLEX_STREAMED`, what inference
  gateways configure), as the stream's `protocol_config` says (BUFFERED when it says nothing).
- Once the body is complete, `Picker.decide` (epp/picker.py) picks. The endpoints go out as the
  `x-gateway-destination-endpoint` header and as dynamic metadata
  `{"envoy.lb": {"x-gateway-destination-endpoint": "ip:port,ip:port"}}`, the same value, the
  chosen one first and the fallbacks after it. The body goes on rewritten (the published model
  name, the band's priority): in full duplex mode as the streamed body, otherwise as a body
  mutation, with its new Content-Length.
- A request it cannot route ends with an `ImmediateResponse`: OpenAI's error body and status
  (400 bad input, 401/403 auth, 404 an unknown model, 503 no ready replica).
- The response phase, when the data plane sends it, passes through unchanged.

The picked replica counts as loaded (the policy's `outstanding`) until the data plane closes the
stream, which it does when the HTTP exchange ends.
"""

from __future__ import annotations

import json
import time
from typing import AsyncIterator, Callable

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3.external_processor_pb2_grpc import ExternalProcessorServicer
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct

from llmcell.epp.picker import Pick, Picker, Refusal
from llmcell.gateway.cold_start import ColdStart
from llmcell.protocol.errors import APIError

DESTINATION = "x-gateway-destination-endpoint"
NAMESPACE = "envoy.lb"
FULL_DUPLEX = ProcessingMode.FULL_DUPLEX_STREAMED
CHUNK = 62 * 1024
"""Bytes per streamed body response (under the data plane's per-message limits)."""


def _headers(message: pb.HttpHeaders) -> dict[str, str]:
    return {h.key.lower(): h.raw_value.decode("latin-1") if h.raw_value else h.value
            for h in message.headers.headers}


def _mutation(headers: dict[str, str]) -> pb.HeaderMutation:
    return pb.HeaderMutation(set_headers=[
        HeaderValueOption(header=HeaderValue(key=k, raw_value=v.encode("latin-1")),
                          append_action=HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
        for k, v in headers.items()])


def refusal_response(refusal: Refusal) -> pb.ProcessingResponse:
    headers = {"content-type": "application/json", **{k.lower(): v for k, v in
                                                       refusal.headers.items()}}
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=HttpStatus(code=refusal.status), headers=_mutation(headers), body=refusal.body,
        details=f"llmcell endpoint picker: {refusal.status}"))


def pick_responses(pick: Pick, full_duplex: bool) -> list[pb.ProcessingResponse]:
    """What tells the data plane where to send the request, and the body to send."""
    endpoints = ",".join(pick.endpoints)
    metadata = Struct()
    metadata.update({NAMESPACE: {DESTINATION: endpoints}})
    mutation = _mutation({DESTINATION: endpoints, **pick.set_headers})
    if not full_duplex:
        return [pb.ProcessingResponse(
            request_body=pb.BodyResponse(response=pb.CommonResponse(
                header_mutation=mutation, body_mutation=pb.BodyMutation(body=pick.body),
                clear_route_cache=True)),
            dynamic_metadata=metadata)]
    out = [pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(response=pb.CommonResponse(
            header_mutation=mutation, clear_route_cache=True)),
        dynamic_metadata=metadata)]
    chunks = [pick.body[i:i + CHUNK] for i in range(0, len(pick.body), CHUNK)] or [b""]
    for i, chunk in enumerate(chunks):
        out.append(pb.ProcessingResponse(request_body=pb.BodyResponse(
            response=pb.CommonResponse(body_mutation=pb.BodyMutation(
                streamed_response=pb.StreamedBodyResponse(
                    body=chunk, end_of_stream=i == len(chunks) - 1))))))
    return out


class EndpointPicker(ExternalProcessorServicer):
    def __init__(self, picker: Picker,
                 on_decision: Callable[[Pick | Refusal, float], None] = lambda d, s: None,
                 cold: ColdStart | None = None) -> None:
        """`on_decision(decision, seconds)`: each decision and how long it took (metrics);
        `cold`: where a request for a model getting its first replica waits (as at the
        gateway) instead of a 503."""
        self.picker = picker
        self.on_decision = on_decision
        self.cold = cold

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context) -> AsyncIterator[pb.ProcessingResponse]:
        request_mode = response_mode = ProcessingMode.BUFFERED
        headers: dict[str, str] = {}
        body = bytearray()
        picked: Pick | None = None
        try:
            async for message in request_iterator:
                if message.HasField("protocol_config"):
                    config = message.protocol_config
                    request_mode = config.request_body_mode or request_mode
                    response_mode = config.response_body_mode or response_mode
                kind = message.WhichOneof("request")
                if kind == "request_headers":
                    headers = _headers(message.request_headers)
                    if message.request_headers.end_of_stream:  # no body to route by
                        decision = await self._decide(headers, b"")
                        if isinstance(decision, Refusal):
                            yield refusal_response(decision)
                            return
                    elif request_mode != FULL_DUPLEX:
                        yield pb.ProcessingResponse(request_headers=pb.HeadersResponse())
                elif kind == "request_body":
                    body += message.request_body.body
                    if not message.request_body.end_of_stream:
                        continue
                    decision = await self._decide(headers, bytes(body))
                    if isinstance(decision, Refusal):
                        yield refusal_response(decision)
                        return
                    picked = decision
                    self.picker.begin(picked)
                    for response in pick_responses(picked, request_mode == FULL_DUPLEX):
                        yield response
                elif kind == "request_trailers":
                    yield pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
                elif kind == "response_headers":
                    yield pb.ProcessingResponse(response_headers=pb.HeadersResponse())
                elif kind == "response_body":
                    yield self._pass_response_body(message.response_body, response_mode)
                elif kind == "response_trailers":
                    yield pb.ProcessingResponse(response_trailers=pb.TrailersResponse())
        finally:
            if picked is not None:
                self.picker.end(picked)

    async def _decide(self, headers: dict[str, str], body: bytes) -> Pick | Refusal:
        started = time.perf_counter()
        decision = self.picker.decide(headers, body)
        if (isinstance(decision, Refusal) and decision.status == 503 and decision.model
                and self.cold is not None and self.cold.applies(decision.model)):
            try:
                await self.cold.wait(decision.model)
                decision = self.picker.decide(headers, body)
            except APIError as e:
                decision = Refusal(e.status, json.dumps(e.body()).encode(), dict(e.headers),
                                   decision.model)
        self.on_decision(decision, time.perf_counter() - started)
        return decision

    @staticmethod
    def _pass_response_body(part: pb.HttpBody, mode: int) -> pb.ProcessingResponse:
        if mode != FULL_DUPLEX:
            return pb.ProcessingResponse(response_body=pb.BodyResponse())
        return pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse(
            body_mutation=pb.BodyMutation(streamed_response=pb.StreamedBodyResponse(
                body=part.body, end_of_stream=part.end_of_stream)))))
