"""`llmcell batch`: run a JSONL or Parquet file of requests as a batch through a cell's gateway (with a
progress bar; the same command again resumes the same batch), and look at or cancel one."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llmcell.batch.client import BatchClient, progress_bar
from llmcell.protocol.batch import ENDPOINTS

API_KEY_ENV = "LLMCELL_API_KEY"


def _parquet():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ValueError("Parquet needs pyarrow: pip install 'llmcell[parquet]' (or pyarrow)") \
            from None
    return pyarrow, pyarrow.parquet


def _requests(path: Path):
    """The input's requests: JSONL lines, or Parquet rows (a column per body field, or
    `custom_id` and `body`, a JSON string or a struct); a null field is left out."""
    if path.suffix == ".parquet":
        _, pq = _parquet()
        for n, row in enumerate(pq.read_table(path).to_pylist(), 1):
            item = {k: v for k, v in row.items() if v is not None}
            if isinstance(item.get("body"), str):
                try:
                    item["body"] = json.loads(item["body"])
                except ValueError as e:
                    raise ValueError(f"{path} row {n}: body is not JSON: {e}") from None
            yield item
        return
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}:{n} is not JSON: {e}") from None


def _write(path: Path, results: list[dict]) -> None:
    """JSONL, or Parquet for a `.parquet` name: custom_id, status_code, text, total_tokens,
    error and the whole response (JSON)."""
    if path.suffix != ".parquet":
        path.write_text("".join(json.dumps(r) + "\n" for r in results))
        return
    pa, pq = _parquet()
    rows = []
    for r in results:
        response = r.get("response") or {}
        body = response.get("body") or {}
        choice = (body.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content", choice.get("text"))
        rows.append({"custom_id": r.get("custom_id"), "status_code": response.get("status_code"),
                     "text": text, "total_tokens": (body.get("usage") or {}).get("total_tokens"),
                     "error": json.dumps(r["error"]) if r.get("error") else None,
                     "response": json.dumps(response) if response else None})
    pq.write_table(pa.Table.from_pylist(rows), path)


def cmd_batch(args: argparse.Namespace) -> int:
    client = BatchClient(args.gateway, args.api_key or os.environ.get(API_KEY_ENV))
    try:
        if args.action == "run":
            source = Path(args.input)
            if not source.is_file():
                raise ValueError(f"input {source} is not a file")
            output = Path(args.output or source.with_suffix(".out.jsonl"))
            state = output.with_name(output.name + ".batch.json")
            results = list(client.run(_requests(source), args.endpoint, args.model, state,
                                      progress_bar(sys.stderr), args.poll))
            _write(output, results)
            failed = sum(r.get("error") is not None or r["response"]["status_code"] != 200
                         for r in results)
            print(f"{len(results)} results in {output} ({failed} failed)", file=sys.stderr)
            state.unlink(missing_ok=True)
            return 1 if failed else 0
        found = (client.status if args.action == "status" else client.cancel)(args.batch_id)
        print(json.dumps(found, indent=2))
        return 0
    except RuntimeError as e:
        raise ValueError(str(e)) from None
    finally:
        client.close()


def add_batch_parser(sub) -> None:
    b = sub.add_parser("batch", help="run a file of requests as a batch (OpenAI Batch API)",
                       description="Batches through a cell's gateway: they run on the capacity "
                                   "online traffic leaves, and survive restarts of the cell.")
    b.add_argument("--gateway", default="http://127.0.0.1:8888", help="gateway URL")
    b.add_argument("--api-key", default=None, help=f"an API key (default: ${API_KEY_ENV})")
    actions = b.add_subparsers(dest="action", required=True)
    r = actions.add_parser("run", help="submit INPUT.jsonl, wait, write the results")
    r.add_argument("input", help="JSONL or Parquet: request bodies, or batch lines with "
                                 "custom_id and body")
    r.add_argument("--model", default=None, help="the model of bodies that name none")
    r.add_argument("-o", "--output", default=None,
                   help="results in input order: JSONL, or Parquet for a .parquet name "
                        "(default: INPUT.out.jsonl)")
    r.add_argument("--endpoint", default=ENDPOINTS[0], choices=ENDPOINTS)
    r.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")
    for name, what in (("status", "a batch's status and counts"), ("cancel", "cancel a batch")):
        a = actions.add_parser(name, help=what)
        a.add_argument("batch_id")
    b.set_defaults(func=cmd_batch)
