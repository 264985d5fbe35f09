"""`lapr pretrain`: train one embedded model from a spec and write its HF checkpoint."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lapr.cli import settings as json_settings
from lapr.data import load_tokenizer, load_tokens

DEFAULTS = {"steps": 200, "batch_size": 16, "seq_len": 128, "lr": 3e-3, "warmup": 20,
            "weight_decay": 0.1, "grad_clip": 1.0, "eval_every": 50, "eval_windows": 16,
            "eval_seq_len": 256, "final_eval_windows": 64, "threads": None, "time_limit_s": None,
            "ema": 0.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=json_settings, required=True, help="model spec (family, sizes)")
    p.add_argument("--settings", type=json_settings, default={}, help=f"training settings; defaults {DEFAULTS}")
    p.add_argument("--train", required=True, help="train token stream (.npy)")
    p.add_argument("--eval", nargs="+", required=True, metavar="NAME=PATH", help="eval token streams")
    p.add_argument("--tokenizer", default="gutenberg-bpe-8k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True)


def run(args: argparse.Namespace) -> None:
    import torch

    from lapr.train.pretrain import pretrain

    unknown = set(args.settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown pretrain settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **args.settings}
    if not 0 <= float(settings["ema"]) < 1:
        raise ValueError(f"settings.ema (decay of the weight average) must be in [0, 1); got {settings['ema']!r}")
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    evals = {}
    for item in args.eval:
        name, _, path = item.partition("=")
        if not path or not Path(path).exists():
            raise FileNotFoundError(f"--eval {item!r}: expected NAME=PATH of an existing token file")
        evals[name] = load_tokens(path)
    tokenizer = load_tokenizer(args.tokenizer)
    spec = {"vocab_size": len(tokenizer), **args.spec}
    metrics = pretrain(spec, settings, load_tokens(args.train), evals, args.out, tokenizer=tokenizer,
                       seed=args.seed, device=args.device)
    print(json.dumps({k: v for k, v in metrics.items() if k != "provenance"}, indent=1))
