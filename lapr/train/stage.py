"""`lapr pretrain`: train one embedded model from a spec and write its HF checkpoint."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from lapr import paths
from lapr.data import load_tokenizer, load_tokens
from lapr.settings import Settings, setting, settings_argument as json_settings


@dataclass
class Pretrain(Settings):
    """Settings of `lapr pretrain` (the config's `pretrain` section): lapr.train.pretrain's recipe."""

    SECTION = "pretrain"
    steps: int = setting(200, "optimizer steps", low=1)
    batch_size: int = setting(16, "sequences per step", low=1)
    seq_len: int = setting(128, "tokens per training sequence", low=2)
    lr: float = setting(3e-3, "peak learning rate", above=0)
    warmup: int = setting(20, "linear warm-up steps", low=0)
    weight_decay: float = setting(0.1, low=0)
    grad_clip: float = setting(1.0, "gradient norm clip", above=0)
    eval_every: int = setting(50, "steps between validation losses", low=1)
    eval_windows: int = setting(16, "validation windows per evaluation", low=1)
    eval_seq_len: int = setting(256, "tokens per evaluation window", low=2)
    final_eval_windows: int | None = setting(64, "windows of the final evaluation (null: all)", low=1)
    threads: int | None = setting(None, "torch CPU threads (null: torch's default)", low=1)
    time_limit_s: float | None = setting(None, "stop training after this many seconds (recorded as "
                                         "stopped_early in metrics.json)", above=0)
    ema: float = setting(0.0, "decay of an exponential moving average of the weights (0 = off); the "
                         "checkpoint and metrics are the EMA model's", low=0, below=1)


def parse_settings(raw) -> dict:
    """The pretrain settings (a dict or JSON string) with every key filled in (Pretrain)."""
    return Pretrain.parse(raw).as_dict()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=json_settings, required=True, help="model spec (family, sizes)")
    p.add_argument("--settings", type=json_settings, default={}, help=f"training settings; defaults {Pretrain.defaults()}")
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

    settings = parse_settings(args.settings)
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
