"""What `llmcell up` prints once the cell serves: example calls (with the key when auth is on),
the scrape config, and how to turn auth on or use it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def cli_path() -> str:
    """How the user can run `llmcell` from here: by name when it is on PATH, else the path of
    the one beside this interpreter (`.venv/bin/llmcell` after `make run`)."""
    if shutil.which("llmcell"):
        return "llmcell"
    path = Path(sys.executable).with_name("llmcell")
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def auth_note(admin_key: str | None, token_path: Path) -> str:
    if admin_key is None:
        return ("Auth is off (loopback only): anyone on this machine may call the cell. "
                "`llmcell up --auth` turns it on.")
    return (f"Auth is on. An admin key, shown this once (make more with `{cli_path()} keys "
            f"create`):\n\n  export LLMCELL_API_KEY={admin_key}\n\n"
            "Send it as 'Authorization: Bearer $LLMCELL_API_KEY' (the OpenAI client: "
            "api_key=...). The members' credential is in " + str(token_path) + ".")


def usage(gateway: str, sax_name: str, admin: str, auth: bool = False) -> str:
    short = sax_name.rsplit("/", 1)[-1]
    cli = cli_path()
    bearer = " -H \"Authorization: Bearer $LLMCELL_API_KEY\"" if auth else ""
    api_key = 'os.environ["LLMCELL_API_KEY"]' if auth else '"unused"'
    return f"""
The cell is up. Try it:

  # Saxml REST
  curl -s {gateway}/listcell -X GET -H 'Content-Type: application/json'{bearer} -d '{{"model": "{sax_name}"}}'
  curl -s {gateway}/generate -H 'Content-Type: application/json'{bearer} \\
       -d '{{"model": "{sax_name}", "query": "How many days are in a week?"}}'

  # OpenAI API
  curl -s {gateway}/v1/chat/completions -H 'Content-Type: application/json'{bearer} \\
       -d '{{"model": "{short}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  # Python (pip install openai)
  {"import os" + chr(10) + "  " if auth else ""}from openai import OpenAI
  client = OpenAI(base_url="{gateway}/v1", api_key={api_key})
  print(client.chat.completions.create(model="{short}",
        messages=[{{"role": "user", "content": "Hello!"}}]).choices[0].message.content)

  # Metrics: every component serves /metrics; one Prometheus job finds them all
  scrape_configs:
    - job_name: llmcell
      http_sd_configs: [{{url: "{admin}/prometheus/targets"}}]

  # Load test with a report (JSON, Markdown, PNG plots)
  {cli} bench --url {gateway} --model {short} --num-requests 50 --output /tmp/llmcell-bench{" --api-key $LLMCELL_API_KEY" if auth else ""}

Ctrl-C stops the cell.
"""
