"""The gateway over HTTPS: the official `openai` client with the CA file talks to it; plain HTTP
to the TLS port fails at once, and the gateway keeps serving. Certificates are made by the test
(a CA and a server certificate for 127.0.0.1)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cell.conftest import Proc


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certs(folder) -> tuple[str, str, str]:
    """(CA certificate, server certificate, server key) as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("llmcell test CA"))
          .issuer_name(_name("llmcell test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [folder / "ca.pem", folder / "server.pem", folder / "server.key"]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)


def wait_https(proc: Proc, trust, path: str = "/health", timeout: float = 120.0) -> str:
    url = f"https://127.0.0.1:{proc.port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, verify=trust, timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if proc.proc.poll() is not None:
            raise AssertionError(proc.output())
        time.sleep(0.05)
    raise TimeoutError(url + path)


def test_the_openai_client_talks_https_to_the_gateway(cell, tmp_path):
    ca, cert, key = make_certs(tmp_path)
    cell.start_admin()
    gateway = Proc("gateway", "--admin", cell.admin.url, "--tls-cert", cert, "--tls-key", key)
    cell.procs.append(gateway)
    trust = ssl.create_default_context(cafile=ca)
    https = wait_https(gateway, trust)
    with openai.OpenAI(base_url=https + "/v1", api_key="unused",
                       http_client=httpx.Client(verify=trust), max_retries=0) as client:
        assert client.models.list().data == []  # nothing published: an empty list, over TLS
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port: refused, not a hang
        httpx.get(f"http://127.0.0.1:{gateway.port}/health", timeout=30)
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA refuses it
        httpx.get(https + "/health", timeout=5)
    assert httpx.get(https + "/health", verify=trust, timeout=5).status_code == 200


@pytest.mark.slow
def test_the_members_talk_https_to_each_other(cell, tmp_path):
    """Admin, model server and gateway each serve HTTPS and trust the cell's CA when they call
    one another: a model is published, placed and served with no plain-HTTP hop."""
    ca, cert, key = make_certs(tmp_path)
    tls = ("--tls-cert", cert, "--tls-key", key, "--tls-ca", ca)
    trust = ssl.create_default_context(cafile=ca)
    admin = Proc("admin", "--state", str(tmp_path / "admin.sqlite3"), "--heartbeat-interval",
                 "0.3", *tls)
    cell.procs.append(admin)
    admin_url = wait_https(admin, trust)
    server = Proc("server", "--admin", admin_url, "--server-id", "s0", "--memory", "3GiB",
                  "--threads", "1", "--kv-cache-memory", "256MiB", "--max-model-len", "2048",
                  *tls)
    cell.procs.append(server)
    wait_https(server, trust, "/ready")
    gateway = Proc("gateway", "--admin", admin_url, *tls)
    cell.procs.append(gateway)
    https = wait_https(gateway, trust)
    r = httpx.post(https + "/publish", verify=trust, timeout=60, json={
        "model": "/sax/test/smollm2", "model_path": "smollm2-135m-instruct",
        "checkpoint": "None", "replicas": 1})
    assert r.status_code == 200, r.text
    servers = httpx.get(admin_url + "/cell/servers", verify=trust).json()
    assert servers[0]["address"].startswith("https://")  # the server advertises its HTTPS
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if httpx.get(https + "/health", verify=trust).json()["models"].get("/sax/test/smollm2"):
            break
        time.sleep(0.2)
    with openai.OpenAI(base_url=https + "/v1", api_key="unused", max_retries=0,
                       http_client=httpx.Client(verify=trust)) as client:
        r = client.chat.completions.create(model="smollm2", max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.content


def test_mutual_tls_serves_only_callers_with_a_certificate_of_the_cells_ca(cell, tmp_path):
    ca, cert, key = make_certs(tmp_path)
    admin = Proc("admin", "--state", str(tmp_path / "admin.sqlite3"), "--tls-cert", cert,
                 "--tls-key", key, "--tls-ca", ca, "--tls-client-certs")
    cell.procs.append(admin)
    member = ssl.create_default_context(cafile=ca)
    member.load_cert_chain(cert, key)  # what a member presents (its own certificate)
    url = wait_https(admin, member)
    stranger = ssl.create_default_context(cafile=ca)  # trusts the admin, has no certificate
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/health", verify=stranger, timeout=5)
    assert httpx.get(url + "/health", verify=member, timeout=5).status_code == 200
