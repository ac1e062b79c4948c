"""`llmcell tokenizer export MODEL DIR`: the served model's tokenizer as a Hugging Face
directory, for client tools that count tokens with `transformers` (guidellm's `--processor`,
aiperf's `--tokenizer`) on machines that cannot reach the Hugging Face hub."""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    from llmcell.engine.loader.export import export_tokenizer_dir, load_tokenizer

    tk, max_len = load_tokenizer(args.model)
    out = export_tokenizer_dir(tk, max_len, args.dir)
    print(f"wrote {args.model}'s tokenizer to {out} (load it with "
          f"AutoTokenizer.from_pretrained({str(out)!r}))")
    return 0


def add_tokenizer_parser(sub) -> None:
    t = sub.add_parser("tokenizer", help="export a model's tokenizer for client tools",
                       description="Tools for the tokenizer of a model llmcell serves.")
    verbs = t.add_subparsers(dest="tokenizer_verb", required=True, metavar="VERB")
    e = verbs.add_parser("export", help="write the tokenizer as a Hugging Face directory",
                         description="Write MODEL's tokenizer (tokenizer.json, "
                                     "tokenizer_config.json with the chat template) to DIR.")
    e.add_argument("model", help="a built-in alias (smollm2-135m-instruct), a GGUF file or a "
                                 "Hugging Face directory: what --model takes")
    e.add_argument("dir", help="the directory to write (made if missing)")
    e.set_defaults(func=cmd_export)
