"""The endpoint picker over gRPC, as Envoy calls it: real ext_proc messages (request headers, a
buffered or streamed JSON body, end of stream) to `llmcell epp`'s service in process, which
follows the real admin app (tests/gateway/harness.py). It picks a ready replica of the requested
model, refuses what it cannot route as the protocol says, answers the gRPC health service, and
picks the same replicas as the gateway for the same requests."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3.external_processor_pb2_grpc import ExternalProcessorStub
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmcell.config.epp import EppConfig
from llmcell.config.security import CellSecurity
from llmcell.epp.main import EppProcess
from llmcell.epp.picker import endpoint_of
from tests.gateway.harness import MODEL, SOURCE, Gateway

SERVERS = ["r0", "r1", "r2", "r3"]


def cell(tmp_path, replicas: int = 4, **gateway) -> Gateway:
    """The harness's admin and gateway, with `replicas` servers reporting ready replicas."""
    g = Gateway(tmp_path, **gateway)
    for sid in SERVERS[:replicas]:
        g.admin.post("/cell/servers", json={"server": {
            "id": sid, "address": f"http://{sid}:8000", "engine": "builtin",
            "memory_bytes": 8 << 30, "group_size": 1, "models": ["*"]}}).raise_for_status()
    r = g.admin.post("/models", json={"model": MODEL, "model_path": SOURCE, "checkpoint": "None",
                                      "replicas": replicas})
    assert r.status_code == 200, r.text
    for sid in SERVERS[:replicas]:
        assigned = g.admin.post(f"/cell/servers/{sid}/heartbeat", json={"replicas": []}).json()
        ready = [dict(a, state="ready", error="", running=0, waiting=0, slots=0)
                 for a in assigned["assignments"]]
        g.admin.post(f"/cell/servers/{sid}/heartbeat",
                     json={"replicas": ready}).raise_for_status()
    g.refresh()
    return g


def headers(path: str = "/v1/chat/completions", method: str = "POST", **extra) -> pb.HttpHeaders:
    pairs = {":path": path, ":method": method, "content-type": "application/json", **extra}
    return pb.HttpHeaders(headers=HeaderMap(headers=[
        HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]))


def chat(content: str = "Hi", model: str = "m", **fields) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}],
                       **fields}).encode()


async def exchange(port: int, messages: list[pb.ProcessingRequest],
                   stop_after: int | None = None) -> list[pb.ProcessingResponse]:
    """Send `messages` on one ext_proc stream (as Envoy does) and read `stop_after` answers, or
    until the picker ends the stream."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = ExternalProcessorStub(channel).Process()
        out = []
        for m in messages:
            await call.write(m)
        await call.done_writing()
        async for response in call:
            out.append(response)
            if stop_after is not None and len(out) >= stop_after:
                break
        return out


def buffered(body: bytes, **head) -> list[pb.ProcessingRequest]:
    return [pb.ProcessingRequest(request_headers=headers(**head)),
            pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))]


def destination(response: pb.ProcessingResponse, where: str = "request_body") -> list[str]:
    mutation = getattr(response, where).response.header_mutation
    header = {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
    meta = response.dynamic_metadata.fields["envoy.lb"].struct_value.fields
    assert meta["x-gateway-destination-endpoint"].string_value == \
        header["x-gateway-destination-endpoint"]  # the same value both ways, as the protocol asks
    return header["x-gateway-destination-endpoint"].split(",")


def run_epp(g: Gateway, scenario, **config):
    config.setdefault("health_port", 0)
    """Start the picker in process against the harness's admin, run `scenario(port, epp)`."""
    async def main():
        epp = EppProcess(EppConfig(admin="http://admin", **config),
                         admin_transport=httpx.MockTransport(g._admin))
        port = await epp.start(0)
        try:
            while not epp.view.updated:
                await asyncio.sleep(0.02)
            return await scenario(port, epp)
        finally:
            await epp.stop(0)
    return asyncio.run(main())


def test_a_buffered_chat_goes_to_a_ready_replica_with_its_body_rewritten(tmp_path):
    g = cell(tmp_path)

    async def scenario(port, epp):
        out = await exchange(port, buffered(chat(max_tokens=5, priority=1)))
        assert [r.WhichOneof("response") for r in out] == ["request_headers", "request_body"], out
        endpoints = destination(out[1])
        assert len(endpoints) == 3 and len(set(endpoints)) == 3  # picked + 2 fallbacks
        assert set(endpoints) <= {endpoint_of(f"http://{s}:8000") for s in SERVERS}
        sent = json.loads(out[1].request_body.response.body_mutation.body)
        assert sent["model"] == MODEL and sent["priority"] == 0 and sent["max_tokens"] == 5
        set_headers = {h.header.key: h.header.raw_value.decode()
                       for h in out[1].request_body.response.header_mutation.set_headers}
        assert int(set_headers["content-length"]) == len(
            out[1].request_body.response.body_mutation.body)
        assert "authorization" not in set_headers  # auth is off
        assert endpoints[0] == "r0:8000"  # least_load: all idle, ties by id
        assert epp.view.outstanding.get("r0") == 0  # released when the stream closed

    run_epp(g, scenario, fallbacks=2)


def test_a_streamed_body_gets_the_headers_then_the_body_back(tmp_path):
    g = cell(tmp_path, replicas=2)
    body = chat("x" * 100_000, stream=True)  # more than one streamed chunk back

    async def scenario(port, epp):
        config = pb.ProtocolConfiguration(request_body_mode=ProcessingMode.FULL_DUPLEX_STREAMED)
        msgs = [pb.ProcessingRequest(request_headers=headers(), protocol_config=config)]
        for i in range(0, len(body), 30_000):
            msgs.append(pb.ProcessingRequest(request_body=pb.HttpBody(
                body=body[i:i + 30_000], end_of_stream=i + 30_000 >= len(body))))
        out = await exchange(port, msgs)
        assert out[0].WhichOneof("response") == "request_headers"
        assert destination(out[0], "request_headers")[0] in ("r0:8000", "r1:8000")
        parts = [r.request_body.response.body_mutation.streamed_response for r in out[1:]]
        assert len(parts) >= 2 and parts[-1].end_of_stream
        assert not any(p.end_of_stream for p in parts[:-1])
        sent = json.loads(b"".join(p.body for p in parts))
        assert sent["model"] == MODEL and sent["stream"] is True

    run_epp(g, scenario)


@pytest.mark.parametrize("messages,status,needle", [
    (buffered(chat(model="nope")), 404, "nope"),
    (buffered(b"{not json"), 400, "not valid JSON"),
    (buffered(chat(temperature=9)), 400, "temperature"),
    (buffered(chat(), path="/v1/embeddings"), 404, "/v1/embeddings"),
    ([pb.ProcessingRequest(request_headers=pb.HttpHeaders(
        headers=headers("/v1/models", "GET").headers, end_of_stream=True))], 404, "GET /v1/models"),
])
def test_what_it_cannot_route_ends_with_an_openai_error(tmp_path, messages, status, needle):
    g = cell(tmp_path, replicas=1)

    async def scenario(port, epp):
        out = await exchange(port, messages)
        final = out[-1].immediate_response
        assert final.status.code == status
        assert needle in json.loads(final.body)["error"]["message"]
        content_type = {h.header.key: h.header.raw_value for h in final.headers.set_headers}
        assert content_type["content-type"] == b"application/json"

    run_epp(g, scenario)


def test_no_ready_replica_is_a_503(tmp_path):
    g = cell(tmp_path, replicas=1)
    g.admin.post("/cell/servers/r0/heartbeat", json={"replicas": [{
        "model": MODEL, "model_path": SOURCE, "checkpoint": "None", "state": "loading"}]})

    async def scenario(port, epp):
        await epp.view.refresh()
        out = await exchange(port, buffered(chat()))
        assert out[-1].immediate_response.status.code == 503
        assert epp.metrics.requests.labels(MODEL, "503")._value.get() == 1

    run_epp(g, scenario)


def test_health_tells_liveness_and_readiness(tmp_path):
    g = cell(tmp_path, replicas=1)

    async def scenario(port, epp):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"):
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=service))
                assert answer.status == health_pb2.HealthCheckResponse.SERVING, service

    run_epp(g, scenario)


def test_with_auth_a_key_is_checked_and_swapped_for_the_cell_credential(tmp_path):
    token = "t" * 43
    g = cell(tmp_path, replicas=1, token=token, bootstrap="sk-llmcell-" + "a" * 43)
    key = g.admin.post("/keys", json={"tenant": "acme", "role": "user"}).json()["key"]
    g.refresh()

    async def scenario(port, epp):
        await epp.view.refresh()
        refused = await exchange(port, buffered(chat(), authorization="Bearer sk-llmcell-" +
                                                "b" * 43))
        assert refused[-1].immediate_response.status.code == 401
        missing = await exchange(port, buffered(chat()))
        assert missing[-1].immediate_response.status.code == 401
        out = await exchange(port, buffered(chat(), authorization=f"Bearer {key}"))
        set_headers = {h.header.key: h.header.raw_value.decode()
                       for h in out[-1].request_body.response.header_mutation.set_headers}
        assert set_headers["authorization"] == f"Bearer {token}"

    run_epp(g, scenario, security=CellSecurity(token))


@pytest.mark.parametrize("policy", ["prefix_affinity", "round_robin"])
def test_the_gateway_and_the_picker_choose_the_same_replicas(tmp_path, policy):
    g = cell(tmp_path, policy=policy)
    bodies = [chat(f"Conversation {i % 7}: what next?", max_tokens=2) for i in range(24)]
    with g.client:  # the gateway's own lifespan: it follows the admin too
        through_gateway = []
        for body in bodies:
            r = g.client.post("/v1/chat/completions", content=body,
                              headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text
            through_gateway.append(r.headers["X-Llmcell-Replica"])

    async def scenario(port, epp):
        picked = []
        for body in bodies:
            out = await exchange(port, buffered(body))
            picked.append(destination(out[-1])[0].split(":")[0])
        return picked

    assert run_epp(g, scenario, policy=policy) == through_gateway
    assert len(set(through_gateway)) > 1


def test_a_self_signed_picker_serves_tls_and_plaintext_health_for_probes(tmp_path):
    from tests.server.conftest import free_port

    g = cell(tmp_path, replicas=1)
    probes = free_port()

    async def scenario(port, epp):
        key, cert = epp.certificate  # what a client that verifies would trust
        credentials = grpc.ssl_channel_credentials(root_certificates=cert)
        options = [("grpc.ssl_target_name_override", "localhost")]
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                           options) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="liveness"))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{probes}") as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="readiness"))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

    run_epp(g, scenario, self_signed=True, health_port=probes)


def test_a_request_for_a_model_at_zero_waits_for_its_first_replica(tmp_path):
    """Scaled to zero: the picker holds the request (as the gateway does), the admin's
    autoscaler places a replica, and once it is ready the request goes to it."""
    g = cell(tmp_path, replicas=1)
    r = g.admin.put("/models", json={"model": MODEL, "model_path": SOURCE, "checkpoint": "None",
                                     "replicas": 0, "autoscaling": {"min_replicas": 0,
                                                                    "max_replicas": 1}})
    assert r.status_code == 200, r.text
    g.admin.post("/cell/servers/r0/heartbeat", json={"replicas": []}).raise_for_status()

    async def scenario(port, epp):
        await epp.view.refresh()
        assert MODEL in epp.view.view.cold
        held = asyncio.create_task(exchange(port, buffered(chat())))
        await asyncio.sleep(1.5)  # the picker told the admin; the replica is placed
        assert not held.done()
        assigned = g.admin.post("/cell/servers/r0/heartbeat", json={"replicas": []}).json()
        assert assigned["assignments"], "the held request woke the model"
        ready = [dict(a, state="ready", error="", running=0, waiting=0, slots=0)
                 for a in assigned["assignments"]]
        g.admin.post("/cell/servers/r0/heartbeat", json={"replicas": ready}).raise_for_status()
        out = await asyncio.wait_for(held, 10)
        assert destination(out[-1]) == [endpoint_of("http://r0:8000")]

    run_epp(g, scenario)
