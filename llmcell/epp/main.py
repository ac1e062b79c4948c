"""Run the endpoint picker: the ext_proc service and the gRPC health service on one port, the
cell's view (and, for kv_affinity, the replicas' KV events) followed in the background, and
Prometheus metrics on another port.

Health answers as the protocol asks: `liveness` SERVING while the process runs; `readiness` and
`envoy.service.ext_proc.v3.ExternalProcessor` SERVING once the admin's routing view was read; on
the ext_proc port and, in plaintext, on the health port (Kubernetes' gRPC probes speak no TLS).
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
import httpx
from envoy.service.ext_proc.v3.external_processor_pb2_grpc import (
    add_ExternalProcessorServicer_to_server)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client import start_http_server

from llmcell.config.epp import EppConfig
from llmcell.config.gateway import GatewayConfig
from llmcell.edge.admin_client import admin_client
from llmcell.edge.auth import Authenticator
from llmcell.epp.picker import Pick, Picker, Refusal
from llmcell.epp.service import EndpointPicker
from llmcell.gateway.cold_start import ColdStart
from llmcell.gateway.kv_follow import KVFollower
from llmcell.gateway.view import CellView
from llmcell.metrics.epp import EppMetrics
from llmcell.router import make_policy

EXT_PROC = "envoy.service.ext_proc.v3.ExternalProcessor"


class EppProcess:
    """Everything the picker runs, built from its config; `serve()` until cancelled."""

    def __init__(self, config: EppConfig,
                 admin_transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        member = config.security.client
        self.admin = admin_client(config.security, config.admin, 10.0, admin_transport)
        self.replicas = httpx.AsyncClient(**member(timeout=30.0))
        view_config = GatewayConfig(admin=config.admin, host=config.host, policy=config.policy,
                                    view_interval=config.view_interval, security=config.security)
        self.view = CellView(view_config, self.admin, advertise=False)
        self.metrics = EppMetrics(config.policy)
        self.kv = KVFollower(self.view, self.replicas,
                             lambda model, outcome: self.metrics.kv_routing.labels(
                                 model, outcome).inc(), "epp") \
            if config.policy == "kv_affinity" else None
        if self.kv is not None:
            self.metrics.registry.register(self.kv)
        sec = config.security
        auth = Authenticator(sec.cell_token, lambda: self.view.keys) if sec.auth else None
        self.picker = Picker(self.view, make_policy(config.policy, config.bounded_load), self.kv,
                             config.prefix_chars, config.fallbacks, config.max_body_bytes, auth,
                             sec.cell_token if sec.auth else None)
        self.cold = ColdStart(self.view, self.admin, config.cold_start_held,
                              config.cold_start_timeout)
        self.health = health_aio.HealthServicer()

    def _decided(self, decision: Pick | Refusal, seconds: float) -> None:
        if isinstance(decision, Pick):
            self.metrics.decided(decision.model, "picked", decision.replicas[0], seconds)
        else:
            self.metrics.decided(decision.model, str(decision.status), None, seconds)

    async def _follow_readiness(self) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        while not self.view.updated:
            await asyncio.sleep(0.1)
        for service in ("readiness", EXT_PROC):
            await self.health.set(service, serving)

    async def start(self, port: int | None = None, health_port: int | None = None) -> int:
        """Start serving; returns the gRPC port (given 0, the one the OS chose)."""
        self.server = grpc.aio.server()
        add_ExternalProcessorServicer_to_server(EndpointPicker(self.picker, self._decided, self.cold),
                                                self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = f"{self.config.host}:{self.config.port if port is None else port}"
        self.certificate = pair = self._certificate()
        bound = (self.server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
                 if pair else self.server.add_insecure_port(address))
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("liveness", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for service in ("readiness", EXT_PROC):
            await self.health.set(service, not_serving)
        self.servers = [self.server]
        health_port = self.config.health_port if health_port is None else health_port
        if health_port:
            probes = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, probes)
            self.health_port = probes.add_insecure_port(f"{self.config.host}:{health_port}")
            self.servers.append(probes)
        self.tasks = [asyncio.create_task(self.view.follow()),
                      asyncio.create_task(self._follow_readiness())]
        if self.kv is not None:
            self.tasks.append(asyncio.create_task(self.kv.follow(self.config.view_interval)))
        for server in self.servers:
            await server.start()
        return bound

    def _certificate(self) -> tuple[bytes, bytes] | None:
        """(key, certificate) PEM to serve TLS with: the configured pair, one made now, or none."""
        sec = self.config.security
        if sec.tls_cert:
            with open(sec.tls_key, "rb") as k, open(sec.tls_cert, "rb") as c:
                return k.read(), c.read()
        return self_signed_pair(self.config.host) if self.config.self_signed else None

    async def stop(self, grace: float = 5.0) -> None:
        for task in self.tasks:
            task.cancel()
        for server in self.servers:
            await server.stop(grace)
        if self.kv is not None:
            await self.kv.aclose()
        await self.cold.aclose()
        await self.admin.aclose()
        await self.replicas.aclose()


def self_signed_pair(host: str) -> tuple[bytes, bytes]:
    """A fresh ECDSA key and a certificate for it, valid a year, signed by itself."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmcell-epp")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


def run(config: EppConfig) -> int:
    process = EppProcess(config)
    if config.metrics_port:
        start_http_server(config.metrics_port, config.host, registry=process.metrics.registry)
    auth = "auth on" if config.security.auth else "auth off"
    tls = ("TLS" if config.security.tls_cert else "self-signed TLS" if config.self_signed
           else "plaintext")

    async def serve() -> None:
        port = await process.start()
        print(f"llmcell epp: ext_proc on {config.host}:{port}, {tls} (admin {config.admin}, "
              f"routing {config.policy}, {auth}); health on :{config.health_port}, metrics on "
              f":{config.metrics_port}",
              file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await process.stop()

    asyncio.run(serve())
    return 0
