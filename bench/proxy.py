"""The proxy path under load, against a stub upstream (bench/proxy_stub.py) that answers in a few
microseconds: what the model server in external mode and the gateway cost per request, with
nginx (a C proxy) on the same stub and core as the physical reference, in one run.

Each component under test runs alone on core 1 (`taskset`); `wrk`, the stub and the other
components share core 0. For each path (stub direct, nginx -> stub, server -> stub, gateway ->
server -> stub): non-streaming requests/s and p50/p99 at concurrency 1/16/64/256, the tested
component's CPU per request (from /proc), then the slow-stream test: N concurrent streams of one
chunk per second through gateway -> server -> stub, all counted. Reports servers the admin
declared dead during the run. Writes JSON and a plot (PNG).

`wrk` and `nginx` come from Debian: `apt-get install -y wrk nginx-light` (.ci/run installs them).

    .venv/bin/python bench/proxy.py [--seconds 5] [--streams 10000] [--stream-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cell import save, stop_all, wait  # noqa: E402
from llmcell.local_cell import free_port  # noqa: E402

PY = sys.executable
BODY = {"model": "stub", "messages": [{"role": "user", "content": "Hi there, how are you?"}],
        "max_tokens": 8}
NGINX_CONF = """worker_processes 1; daemon off; pid {dir}/nginx.pid; error_log {dir}/error.log;
events {{ worker_connections 20000; }}
http {{ access_log off; client_body_temp_path {dir}; proxy_temp_path {dir};
  fastcgi_temp_path {dir}; uwsgi_temp_path {dir}; scgi_temp_path {dir};
  upstream stub {{ server 127.0.0.1:{stub}; keepalive 256; }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://stub;
    proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }} }} }}
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def run_wrk(url: str, connections: int, seconds: float, script: Path) -> dict:
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"req_s": rate, "p50_ms": p50, "p99_ms": p99,
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, core: int, *cmd: str) -> subprocess.Popen:
        p = subprocess.Popen(["taskset", "-c", str(core), *cmd], stdout=subprocess.DEVNULL,
                             stderr=open(f"/tmp/llmcell-proxy-{len(self.procs)}.log", "w"))
        self.procs.append(p)
        return p

    def stop(self) -> None:
        stop_all(self.procs, 20)


def measure(name: str, url: str, pid: int | None, levels: list[int], seconds: float,
            script: Path, behind: int | None = None) -> list[dict]:
    """`behind`: a process behind the tested one (the server behind the gateway) whose CPU per
    request is recorded too."""
    rows = []
    run_wrk(url, 16, 1, script)  # warm-up: connections, caches
    for c in levels:
        before = cpu_seconds(pid) if pid else 0.0
        behind_before = cpu_seconds(behind) if behind else 0.0
        r = run_wrk(url, c, seconds, script)
        used = cpu_seconds(pid) - before if pid else 0.0
        total = r["req_s"] * seconds
        r.update(path=name, concurrency=c,
                 cpu_us_per_request=round(1e6 * used / total, 1) if pid and total else None,
                 core_share=round(used / seconds, 2) if pid else None)
        if behind and total:
            r["behind_cpu_us_per_request"] = round(
                1e6 * (cpu_seconds(behind) - behind_before) / total, 1)
        rows.append(r)
        print(f"{name:>8} c={c:<4} {r['req_s']:>9.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
              f"p99 {r['p99_ms']:.2f} ms  cpu/req {r['cpu_us_per_request']} us "
              f"(core {r['core_share']}{', server ' + str(r['behind_cpu_us_per_request']) + ' us' if 'behind_cpu_us_per_request' in r else ''})  "
              f"errors {r['non_2xx']} {r['socket_errors']}", flush=True)
    return rows


async def slow_streams(url: str, n: int, seconds: int) -> dict:
    """`n` concurrent streams, each one chunk per second for `seconds`; counts what completed."""
    import aiohttp

    body = json.dumps(dict(BODY, model="/sax/test/stub", stream=True, chunks=seconds,
                           interval=1.0)).encode()
    done, errors, first = 0, {}, []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=120, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one() -> None:
            nonlocal done
            started = time.monotonic()
            try:
                async with session.post(url + "/v1/chat/completions", data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    if r.status != 200:
                        key = f"{r.status} {(await r.text())[:160]}"
                        errors[key] = errors.get(key, 0) + 1
                        return
                    chunks = 0
                    async for line in r.content:
                        if line.startswith(b"data: {"):
                            if chunks == 0:
                                first.append(time.monotonic() - started)
                            chunks += 1
                        elif line.startswith(b"data: [DONE]") and chunks == seconds:
                            done += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

        await asyncio.gather(*[one() for _ in range(n)])
    first.sort()
    return {"streams": n, "completed": done, "errors": errors,
            "first_chunk_p50_s": round(first[len(first) // 2], 3) if first else None,
            "first_chunk_p99_s": round(first[int(0.99 * (len(first) - 1))], 3) if first else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--levels", default="1,16,64,256")
    p.add_argument("--streams", type=int, default=10000)
    p.add_argument("--stream-seconds", type=int, default=20)
    p.add_argument("--paths", default="stub,nginx,server,gateway",
                   help="which request-rate measurements to run (the slow streams always run)")
    p.add_argument("--json", type=Path, default=ROOT / "bench/results/proxy.json")
    p.add_argument("--plot", type=Path, default=ROOT / "bench/results/proxy.png")
    args = p.parse_args()
    missing = [t for t in ("wrk", "nginx", "taskset")
               if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing and os.geteuid() == 0:  # the bench's own set-up, from Debian
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk", "nginx-light", "util-linux"],
                       check=False)
        missing = [t for t in missing
                   if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        sys.exit(f"{', '.join(missing)} missing: apt-get install -y wrk nginx-light util-linux")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:  # a proxy holds two sockets per stream; children inherit the limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    levels = [int(x) for x in args.levels.split(",")]
    tmp = Path(tempfile.mkdtemp())
    script = tmp / "body.lua"
    script.write_text('wrk.method = "POST"\nwrk.body = ' + json.dumps(json.dumps(BODY)) +
                      '\nwrk.headers["Content-Type"] = "application/json"\n')
    gw_script = tmp / "gw.lua"
    gw_script.write_text(script.read_text().replace('\\"stub\\"', '\\"/sax/test/stub\\"'))
    procs = Procs()
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    rows: list[dict] = []
    try:
        stub_port, nginx_port, server_port, admin_port, gw_port = (free_port("127.0.0.1")
                                                                   for _ in range(5))
        stub = f"http://127.0.0.1:{stub_port}"
        stub_proc = procs.start(1, PY, str(ROOT / "bench/proxy_stub.py"), "--port",
                                str(stub_port))
        wait(stub + "/health", 30)
        paths = set(args.paths.split(","))
        if "stub" in paths:
            rows += measure("stub", stub + "/v1/chat/completions", stub_proc.pid, levels,
                            args.seconds, script)
        subprocess.run(["taskset", "-a", "-p", "-c", "0", str(stub_proc.pid)],
                       capture_output=True)
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp, stub=stub_port,
                                                          port=nginx_port))
        nginx = procs.start(1, shutil.which("nginx") or "/usr/sbin/nginx", "-c",
                            str(tmp / "nginx.conf"), "-e", str(tmp / "error.log"))
        wait(f"http://127.0.0.1:{nginx_port}/health", 30)
        nginx_pids = [int(x) for x in subprocess.run(["pgrep", "-P", str(nginx.pid)],
                                                     capture_output=True, text=True).stdout.split()]
        if "nginx" in paths:
            rows += measure("nginx", f"http://127.0.0.1:{nginx_port}/v1/chat/completions",
                            nginx_pids[0] if nginx_pids else nginx.pid, levels, args.seconds,
                            script)
        admin = procs.start(0, PY, "-m", "llmcell.cli", "admin", "--port", str(admin_port),
                            "--state", str(tmp / "admin.sqlite3"))
        admin_url = f"http://127.0.0.1:{admin_port}"
        wait(admin_url + "/health", 60)
        server = procs.start(1, PY, "-m", "llmcell.cli", "server", "--engine", "openai",
                             "--upstream", stub, "--served-model-name", "stub", "--port",
                             str(server_port), "--admin", admin_url, "--server-id", "server-0")
        gateway = procs.start(0, PY, "-m", "llmcell.cli", "gateway", "--admin", admin_url,
                              "--port", str(gw_port))
        gw = f"http://127.0.0.1:{gw_port}"
        wait(gw + "/health", 60)
        wait(f"http://127.0.0.1:{server_port}/health", 60)
        wait(admin_url + "/cell/servers", 60, lambda r: len(r.json()) == 1)  # it joined
        httpx.post(admin_url + "/models", json={"model": "/sax/test/stub", "model_path": "stub",
                                                "checkpoint": "None", "replicas": 1},
                   timeout=30).raise_for_status()
        wait(gw + "/health", 60, lambda r: r.json()["models"].get("/sax/test/stub", 0) == 1)
        if "server" in paths:
            rows += measure("server", f"http://127.0.0.1:{server_port}/v1/chat/completions",
                            server.pid, levels, args.seconds, gw_script)
        for pid, core in ((server.pid, 0), (gateway.pid, 1)):  # now the gateway alone on 1
            subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)],
                           capture_output=True)
        if "gateway" in paths:
            rows += measure("gateway", gw + "/v1/chat/completions", gateway.pid, levels,
                            args.seconds, gw_script, behind=server.pid)
        print(f"slow streams: {args.streams} x {args.stream_seconds} s ...", flush=True)
        slow = asyncio.run(slow_streams(gw, args.streams, args.stream_seconds))
        slow["gateway_rss_mib"] = round(rss_mib(gateway.pid), 1)
        slow["server_rss_mib"] = round(rss_mib(server.pid), 1)
        dead = httpx.get(admin_url + "/metrics", timeout=10).text
        declared = re.search(r"^llmcell:servers_declared_dead (\S+)$", dead, re.M)
        slow["servers_declared_dead"] = float(declared.group(1)) if declared else None
        print(json.dumps(slow), flush=True)
    finally:
        procs.stop()
    by = {(r["path"], r["concurrency"]): r["req_s"] for r in rows}
    p50 = {(r["path"], r["concurrency"]): r["p50_ms"] for r in rows}

    def ratio(a, b, table=by):
        return table[a] / table[b] if a in table and b in table else None

    ratios = {
        "gateway_c256_over_c16": ratio(("gateway", 256), ("gateway", 16)),
        "server_c256_over_c16": ratio(("server", 256), ("server", 16)),
        "gateway_over_nginx_c16": ratio(("gateway", 16), ("nginx", 16)),
        "gateway_added_p50_ms_c1": (p50[("gateway", 1)] - p50[("server", 1)]
                                    if ("gateway", 1) in p50 and ("server", 1) in p50 else None),
        "server_added_p50_ms_c1": (p50[("server", 1)] - p50[("stub", 1)]
                                   if ("server", 1) in p50 and ("stub", 1) in p50 else None),
    }
    result = {"cpu_capability": capability, "seconds": args.seconds, "rows": rows,
              "ratios": ratios, "slow_streams": slow}
    print(json.dumps(ratios, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if rows:
        plot(rows, levels, capability, args.plot)


def plot(rows: list[dict], levels: list[int], capability: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for path in ("stub", "nginx", "server", "gateway"):
        mine = [r for r in rows if r["path"] == path]
        ax.plot(levels, [r["req_s"] for r in mine], marker="o", label=path)
        if mine:
            bx.plot(levels, [r["cpu_us_per_request"] for r in mine], marker="o", label=path)
    for a in (ax, bx):
        a.set_xscale("log", base=2)
        a.set_xlabel("concurrent connections")
        a.legend()
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (one core)")
    bx.set_ylabel("CPU µs per request")
    fig.suptitle(f"proxy path, stub upstream ({capability})")
    print("plot:", save(fig, out.parent, out.name))


if __name__ == "__main__":
    main()
