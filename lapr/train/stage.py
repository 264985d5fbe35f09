"""`lapr pretrain`: train one embedded model from a spec and write its HF checkpoint."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lapr import paths
from lapr.data import load_tokenizer, load_tokens
from lapr.settings import settings_argument as json_settings

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


def check_lengths(settings: dict, train, evals: dict) -> None:
    """Every stream holds a window of the length cut from it, checked before training (the final
    evaluation, which cuts eval_seq_len windows, runs after all the steps)."""
    need = [("--train", train, "seq_len", settings["seq_len"] + 1)]
    if evals:  # the first eval stream is the validation set during training
        name, tokens = next(iter(evals.items()))
        need.append((f"--eval {name}", tokens, "seq_len", settings["seq_len"]))
    need += [(f"--eval {name}", tokens, "eval_seq_len", settings["eval_seq_len"]) for name, tokens in evals.items()]
    for where, tokens, key, length in need:
        if len(tokens) < length:
            raise ValueError(f"settings.{key}={settings[key]} needs {length} tokens, but {where} has {len(tokens)}")


def run(args: argparse.Namespace) -> None:
    import torch

    from lapr.train.pretrain import pretrain

    unknown = set(args.settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown pretrain settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **args.settings}
    if not 0 <= float(settings["ema"]) < 1:
        raise ValueError(f"settings.ema (decay of the weight average) must be in [0, 1); got {settings['ema']!r}")
    eval_paths = {}
    for item in args.eval:
        name, _, path = item.partition("=")
        if not path or not Path(path).exists():
            raise FileNotFoundError(f"--eval {item!r}: expected NAME=PATH of an existing token file")
        eval_paths[name] = path
    paths.check_outputs({"--out": args.out}, {"--train": args.train, "--eval": list(eval_paths.values()),
                                             "--tokenizer": paths.local(args.tokenizer)})
    if not Path(args.train).is_file():
        raise FileNotFoundError(f"--train {args.train}: token file not found")
    train = load_tokens(args.train)
    evals = {name: load_tokens(path) for name, path in eval_paths.items()}
    check_lengths(settings, train, evals)
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    tokenizer = load_tokenizer(args.tokenizer)
    spec = {"vocab_size": len(tokenizer), **args.spec}
    metrics = pretrain(spec, settings, train, evals, args.out, tokenizer=tokenizer,
                       seed=args.seed, device=args.device)
    print(json.dumps({k: v for k, v in metrics.items() if k != "provenance"}, indent=1))
