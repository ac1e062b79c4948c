"""A standard load tool, offline, against a local cell: `llmcell tokenizer export` gives guidellm
the tokenizer it would fetch from the Hugging Face hub, and guidellm runs unchanged through the
gateway (the command the README shows)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.cell.conftest import MODEL, SAX, Cell


@pytest.fixture()
def cell(tmp_path):
    c = Cell(tmp_path)
    c.start_admin()
    c.start_server("server-0")
    c.start_gateway()
    c.publish(1)
    c.wait_active(1)
    yield c
    c.stop()


@pytest.mark.slow
def test_guidellm_through_the_gateway(cell, tmp_path):
    guidellm = shutil.which("guidellm", path=str(Path(sys.executable).parent))
    assert guidellm, "guidellm is a test dependency (pyproject.toml)"
    card = httpx.get(cell.gateway.url + f"/v1/models{SAX}").json()
    assert card.get("root") == MODEL, card  # what the model card says to export
    tokenizer = tmp_path / "tokenizer"
    subprocess.run([sys.executable, "-m", "llmcell.cli", "tokenizer", "export", card["root"],
                    str(tokenizer)], check=True, timeout=120)
    out = tmp_path / "guidellm.json"
    done = subprocess.run(
        [guidellm, "run", "--backend",
         f"kind=openai_http,target={cell.gateway.url},model={SAX}",
         "--profile", "kind=concurrent,streams=2",
         "--constraint", "kind=max_requests,count=8",
         "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
         "--data", "kind=synthetic_text,prompt_tokens=32,output_tokens=8",
         "--output", f"kind=json,path={out}", "--disable-console-interactive"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())["benchmarks"][0]
    totals = report["metrics"]["request_totals"]
    assert totals["successful"] == 8 and totals["errored"] == 0, totals
