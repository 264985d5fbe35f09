"""`lapr tokens`: encode a shipped corpus once into a flat int32 token stream (.npy)."""
from __future__ import annotations

import argparse

from lapr import paths
from lapr.data.registry import known_names
from lapr.data.streams import encode_corpus, save_tokens
from lapr.data.tokenizer import load_tokenizer
from lapr.settings import settings_argument as json_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help=f"one of {known_names()}")
    p.add_argument("--tokenizer", default="gutenberg-bpe-8k")
    p.add_argument("--settings", type=json_settings, default={}, help='{"max_chars": int|null}')
    p.add_argument("--out", required=True)


def run(args: argparse.Namespace) -> None:
    if args.dataset not in known_names():
        raise ValueError(f"unknown dataset {args.dataset!r}; known: {known_names()}")
    paths.check_outputs({"--out": args.out}, {"--tokenizer": paths.local(args.tokenizer)})
    tok = load_tokenizer(args.tokenizer)
    tokens = encode_corpus(args.dataset, tok, max_chars=args.settings.get("max_chars"))
    save_tokens(args.out, tokens)
    print(f"{args.dataset}: {len(tokens):,} tokens ({args.tokenizer}) -> {args.out}")
