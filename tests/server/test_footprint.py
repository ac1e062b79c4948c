"""What the front ends load: torch only where an engine core runs. A model server whose engine is
a process of its own, the gateway and the admin never import it (a server starts ~2 s sooner and
holds ~200 MB less than with torch loaded twice)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.server.conftest import MODEL

ROOT = Path(__file__).resolve().parents[2]


def test_front_end_modules_do_not_import_torch():
    code = ("import sys; import llmcell.server.main, llmcell.gateway.main, llmcell.admin.main, "
            "llmcell.engine, llmcell.engine.loader; from llmcell.engine import SamplingParams, "
            "ProcessEngine; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_serving_model_server_holds_torch_only_in_its_engine_process(server, client):
    r = client.chat.completions.create(model=MODEL, max_tokens=4, logprobs=True, top_logprobs=2,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].logprobs.content
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    assert children, "the engine runs in a child process"
    maps = lambda pid: Path(f"/proc/{pid}/maps").read_text()  # noqa: E731
    assert "libtorch" not in maps(server.proc.pid)
    assert any("libtorch" in maps(child) for child in children)
