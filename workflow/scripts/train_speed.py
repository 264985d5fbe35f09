"""Training throughput of one model family through lapr's own pretraining loop (lapr.train.pretrain),
at a profile's model shape: `python workflow/scripts/train_speed.py --family gated_deltanet --out X.json`.

Tokens are random (throughput does not depend on them), so nothing is tokenised first. The first
step (Triton compilation and autotuning on a GPU) is excluded; tokens/s is batch x seq_len over the
median time of the other steps. The row names the backend that `backends.for_training` chose.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _checked() -> dict:
    """Which (device, K, V, dtype) the tiled gated dqkwg was checked on, and the outcome."""
    from lapr.backends import dqkwg_tiled

    return {" ".join(map(str, key)): ok for key, ok in dqkwg_tiled._VERIFIED.items()}


def main() -> None:
    from lapr.families import names

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", required=True, choices=list(names()))
    p.add_argument("--profile", default="gpu", help="workflow/config/<profile>.yaml gives the model shape")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--dqkwg", choices=["auto", "tiled", "torch"], default="auto",
                   help="GDN's gated dqkwg where fla refuses it: LAPR_GDN_DQKWG (lapr.backends.dqkwg_tiled)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import os

    os.environ["LAPR_GDN_DQKWG"] = args.dqkwg

    from lapr import provenance
    from lapr.train.pretrain import pretrain

    cfg = yaml.safe_load((ROOT / "workflow/config" / f"{args.profile}.yaml").read_text())
    spec = next(dict(s) for s in cfg["models"].values() if s["family"] == args.family)
    spec = {k: v for k, v in spec.items() if k != "source"} | {"vocab_size": 8192}
    tokens = np.random.default_rng(0).integers(0, 8192, size=4_000_000, dtype=np.int32)
    settings = {"steps": args.steps, "batch_size": args.batch, "seq_len": args.seq_len, "lr": 1e-3, "warmup": 5,
                "weight_decay": 0.1, "grad_clip": 1.0, "eval_every": 10**9, "eval_windows": 1,
                "eval_seq_len": args.seq_len, "final_eval_windows": 1, "ema": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        metrics = pretrain(spec, settings, tokens, {"random": tokens[:100_000]}, Path(tmp) / "model")
        import pandas as pd

        curve = pd.read_csv(Path(tmp) / "model" / "loss_curve.csv")
    step_s = curve["elapsed_s"].diff().iloc[2:]  # from the third step: the first two include compilation
    row = {"family": args.family, "profile": args.profile, "parameters": metrics["parameters"],
           "backend": metrics["backend"], "dqkwg": args.dqkwg, "dqkwg_checked": _checked(), "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps,
           "first_step_s": metrics["first_step_s"], "step_s_median": float(step_s.median()),
           "tokens_per_s": args.batch * args.seq_len / float(step_s.median()),
           "final_train_loss": float(curve["train_loss"].iloc[-1]),
           "provenance": provenance.record({"spec": spec, "train": settings}, 0, "cuda")}
    Path(args.out).write_text(json.dumps(row, indent=1))
    print(json.dumps({k: v for k, v in row.items() if k != "provenance"}))


if __name__ == "__main__":
    main()
