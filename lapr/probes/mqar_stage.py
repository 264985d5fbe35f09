"""`mqar-train` and `mqar-eval` stages: tiny MQAR models, then recall under channel / head pruning.

    python -m lapr mqar-train --out results/embedded/mqar/models/mqar_dn \\
        --settings '{"model": {"family": "delta_net"}, "train": {"steps": 400}}'
    python -m lapr mqar-eval --model results/embedded/mqar/models/mqar_dn \\
        --out results/embedded/mqar/eval/mqar_dn.csv --settings '{"noise": [0, 0.5, 1]}'

mqar-train (`train_add_arguments` / `train_run`) writes a checkpoint directory (config +
weights, reloadable by stock fla) with metrics.json {family, parameters, task, steps, stopped,
train_time_s (CPU/GPU seconds spent in training steps, eval excluded, over every attempt), threads,
recall (held-out, eval_n sequences), chance, seed (the final attempt's), attempts (one entry per
training run: a run below `restart_below` at `restart_at` restarts from seed + 1000), decay_redrawn,
...}, curve.csv (step, loss, lr, train_s, recall) and provenance.json.

mqar-eval (`eval_add_arguments` / `eval_run`) loads a trained checkpoint and measures recall on
`eval_n` fresh sequences (seed distinct from training) for
- the unpruned model (kind 'none');
- channel pruning (kind 'channel'): every method of lapr.pruning.channels (ALL_METHODS, incl. the
  PCA rotation) at every ratio, via lapr.pruning.select.choose + surgery.prune_channels
  (structural: d_k really shrinks). Calibration statistics come from MQAR sequences:
  lapr.profiling.calibrate.calibrate on `calib` batches, with q_grad / k_grad replaced by the
  gradients of the MQAR loss (query positions only) instead of the LM loss over all tokens;
- head pruning (kind 'head'): every method of lapr.heads.methods at every budget, scored from a
  heads table of the model on MQAR sequences (lapr.heads.table.head_table), applied
  structurally where fla allows, else masked (column `application`);
each at every query-noise level (lapr.probes.mqar.query_noise: relative Gaussian noise on q after
the short conv).

Tidy CSV columns: model, family, kind, method, ratio (channel ratio or head budget; 0 for none),
d_k, heads_removed, removed_low, removed_high, noise, metric ('recall' | 'loss'), value, n
(queries), state_bytes, state_bytes_full, state_saved_frac, application. A provenance JSON
`<stem>.provenance.json` (settings, head tables and plans, timings) goes beside it.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from lapr import columns
from lapr.config import channel_methods
from lapr.eval.stage import DEVICES
from lapr.families import names
from lapr.heads.apply import APPLICATIONS
from lapr.heads.methods import METHODS as HEAD_METHODS, SCOPES
from lapr.probes import mqar
from lapr.settings import Settings, setting

CHANNEL_METHODS = channel_methods()  # registered in lapr/pruning/channels (read without importing torch code)
COLUMNS = columns.MQAR  # shared with the report (lapr/columns.py)


@dataclass
class Model(Settings):
    """The MQAR probe model's spec (the config's `mqar.train.model`)."""

    SECTION = "mqar.train.model"
    family: str = setting(names()[0], "a family lapr adapts (default: the first in sorted order, DeltaNet); "
                          "--family overrides it", choices=tuple(names()))
    hidden_size: int = setting(128, low=8)
    num_layers: int = setting(2, low=1)
    num_heads: int = setting(2, low=1)
    head_k_dim: int = setting(32, low=2)
    head_v_dim: int = setting(32, low=1)
    mlp_ratio: float = setting(2, above=0)
    # fla draws a Gated DeltaNet head's decay rate A from U(0, 16): heads near 16 forget a key within
    # a few tokens at init, and on MQAR (keys ~50 tokens before their query) the probe then often
    # stalled (lr 1e-3: 2 of 4 seeds below recall 0.55 after 800 steps; with A ~ U(0.5, 2): 4 of 4 learned)
    decay_init: list[float] | None = setting([0.5, 2.0], "decay rate A ~ U(low, high) for families with a "
                                             "decay gate (null: the family's own init)", min_items=2, max_items=2,
                                             items=dict(above=0))


@dataclass
class Train(Settings):
    """Settings of `lapr mqar-train` (the config's `mqar.train`)."""

    SECTION = "mqar.train"
    model: Model = setting(Model())
    task: mqar.Task = setting(mqar.Task())
    train: mqar.Training = setting(mqar.Training())
    seed: int = setting(0, "--seed overrides it", low=0)
    device: str | None = setting(None, "null: cuda when available", choices=DEVICES)


@dataclass
class Channel(Settings):
    """Channel pruning of the MQAR models (the config's `mqar.eval.channel`)."""

    SECTION = "mqar.eval.channel"
    methods: str | list[str] | None = setting("all", "'all', 'none' / null / [] or a list of registered methods",
                                              choices=("all", "none"), items=dict(choices=CHANNEL_METHODS))
    ratios: list[float] = setting([0.25, 0.5, 0.75], min_items=1, unique=True, items=dict(above=0, below=1))
    multiple: int = setting(1, "kept d_k rounded down to a multiple of it", low=1)


@dataclass
class HeadPruning(Settings):
    """Head pruning of the MQAR models (the config's `mqar.eval.heads`)."""

    SECTION = "mqar.eval.heads"
    methods: str | list[str] | None = setting("all", "'all', 'none' / null / [] or a list of head methods",
                                              choices=("all", "none"), items=dict(choices=tuple(HEAD_METHODS)))
    budgets: list[float] = setting([0.25, 0.5, 0.75], min_items=1, unique=True, items=dict(above=0, below=1))
    scope: str = setting("global", choices=SCOPES)
    alpha: float = setting(0.5, "joint_rank_norm's weight of the normalised rank", low=0, high=1)
    application: str = setting("auto", choices=APPLICATIONS)
    min_keep: int = setting(0, "heads that must stay in every layer", low=0)
    profile_n: int = setting(256, "MQAR sequences of the head profile", low=1)


@dataclass
class EvalCalib(Settings):
    """Calibration statistics from MQAR sequences (the config's `mqar.eval.calib`)."""

    SECTION = "mqar.eval.calib"
    n_batches: int = setting(4, low=1)
    batch_size: int = setting(32, low=1)
    rows: int = setting(1024, low=1)


@dataclass
class Eval(Settings):
    """Settings of `lapr mqar-eval` (the config's `mqar.eval`)."""

    SECTION = "mqar.eval"
    eval_n: int = setting(512, "held-out sequences", low=1)
    seed: int = setting(0, "--seed overrides it", low=0)
    device: str | None = setting(None, "null: cuda when available", choices=DEVICES)
    batch_size: int = setting(256, low=1)
    noise: list[float] = setting([0.0, 0.25, 0.5, 1.0], "query-noise levels (paper A's probe)", min_items=1,
                                 items=dict(low=0))
    channel: Channel = setting(Channel())
    heads: HeadPruning = setting(HeadPruning())
    calib: EvalCalib = setting(EvalCalib())


def _device(name):
    from lapr.models import resolve_device

    return resolve_device(name)


# ------------------------------------------------------------------------------------------ train

def resolve_train_settings(raw) -> dict:
    """The mqar-train settings (a dict or JSON string) with every key filled in (Train)."""
    return Train.parse(raw or {}).as_dict()


def train_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--family", default=None, help="overrides settings.model.family (" + " | ".join(names()) + ")")
    parser.add_argument("--settings", default="{}", help="JSON object; keys: " + ", ".join(Train.keys()))
    parser.add_argument("--seed", type=int, default=None, help="overrides settings.seed")


def train_model(settings: dict, out_dir, log=print) -> dict:
    """Build, train and save one MQAR model; returns its metrics."""
    from lapr import provenance
    from lapr.models import build_model, family

    device = _device(settings["device"])
    seed, task = settings["seed"], settings["task"]
    threads = settings["train"].get("threads")
    old_threads = torch.get_num_threads()
    if threads and device.type == "cpu":
        torch.set_num_threads(int(threads))
    try:
        spec = {k: v for k, v in settings["model"].items() if k != "decay_init"}
        spec.update(vocab_size=task["vocab_size"], max_length=task["seq_len"])
        attempts, plan, decay = [], settings["train"], settings["model"]["decay_init"]
        for attempt in range(plan["attempts"]):
            run_seed = seed + 1000 * attempt
            last = attempt == plan["attempts"] - 1
            torch.manual_seed(run_seed)
            model = build_model(spec, seed=run_seed)
            redrawn = bool(decay) and family(spec["family"]).init_decay(
                model, *decay, torch.Generator().manual_seed(run_seed))
            model = model.to(device)
            n_params = sum(p.numel() for p in model.parameters())
            log(f"[mqar-train] {spec['family']}: {n_params} parameters, task {task}, seed {run_seed}"
                + (f", decay rate A ~ U{tuple(decay)}" if redrawn else ""), flush=True)
            result = mqar.train(model, {**plan, "restart_at": None if last else plan["restart_at"]}, task,
                                seed=run_seed, log=lambda m: log(m, flush=True))
            attempts.append({"seed": run_seed, "steps": result["steps"], "stopped": result["stopped"],
                             "recall": result["valid"]["recall"], "train_time_s": result["train_time_s"]})
            if result["stopped"] != "plateau":
                break
            log(f"[mqar-train] recall {result['valid']['recall']:.3f} at step {result['steps']} < "
                f"{plan['restart_below']}: restarting from seed {run_seed + 1000}", flush=True)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    metrics = {"family": spec["family"], "parameters": n_params, "spec": spec, "task": task,
               "steps": result["steps"], "stopped": result["stopped"],
               "train_time_s": round(sum(a["train_time_s"] for a in attempts), 2), "seed": attempts[-1]["seed"],
               "decay_redrawn": redrawn, "attempts": attempts,
               "device": device.type, "threads": used_threads, "backend": result["backend"],
               "recall": result["valid"]["recall"], "valid_loss": result["valid"]["loss"],
               "valid_queries": result["valid"]["queries"], "chance": mqar.chance(task["vocab_size"])}
    with provenance.atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        pd.DataFrame(result["curve"]).to_csv(tmp / "curve.csv", index=False)
        provenance.write_json(tmp / "metrics.json", metrics)
        provenance.write_json(tmp / "provenance.json", provenance.record(settings, seed, device, stage="mqar-train"))
    log(f"[mqar-train] recall {metrics['recall']:.4f} (chance {metrics['chance']:.3f}) after {metrics['steps']} "
        f"steps, {metrics['train_time_s']:.1f} s -> {out_dir}", flush=True)
    return metrics


def train_run(args: argparse.Namespace) -> None:
    settings = resolve_train_settings(args.settings)
    if args.family:
        settings["model"]["family"] = args.family
        resolve_train_settings({k: v for k, v in settings.items()})
    if args.seed is not None:
        settings["seed"] = int(args.seed)
    train_model(settings, args.out)


# ------------------------------------------------------------------------------------------ eval

def _methods(value, every) -> list[str]:
    """'all' -> every method, 'none' / null / [] -> none, else the list."""
    return list(every) if value == "all" else [] if value in (None, "none") else list(value)


def resolve_eval_settings(raw) -> dict:
    """The mqar-eval settings (a dict or JSON string) checked by Eval, with 'all' / 'none' method
    lists spelt out."""
    from lapr.heads import methods
    from lapr.pruning.channels import ALL_METHODS

    s = Eval.parse(raw or {}).as_dict()
    ch, hd = s["channel"], s["heads"]
    ch["methods"] = _methods(ch["methods"], ALL_METHODS)
    if ch["methods"]:
        ch["ratios"] = [float(r) for r in ch["ratios"]]
    hd["methods"] = _methods(hd["methods"], methods.METHODS)
    if hd["methods"]:
        hd["budgets"] = [float(b) for b in hd["budgets"]]
    return s


def mqar_grads(model, batches: list[mqar.MQARBatch]) -> list[dict]:
    """Per layer q_grad / k_grad [H, d_k, D]: d(MQAR loss)/d(q_proj / k_proj weight), summed over batches."""
    from lapr.models import family

    views = family(model).attention(model)
    flags = {p: p.requires_grad for p in model.parameters()}
    was = model.training
    grads = [{"q_grad": torch.zeros_like(v.q_proj.weight, dtype=torch.float32),
              "k_grad": torch.zeros_like(v.k_proj.weight, dtype=torch.float32)} for v in views]
    device = next(model.parameters()).device
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        for v in views:
            v.q_proj.weight.requires_grad_(True)
            v.k_proj.weight.requires_grad_(True)
        for b in batches:
            with torch.enable_grad():
                logits = model(input_ids=b.inputs.to(device)).logits
                mqar.mqar_loss(logits, b.targets).backward()
            for g, v in zip(grads, views):
                g["q_grad"] += v.q_proj.weight.grad.float()
                g["k_grad"] += v.k_proj.weight.grad.float()
                v.q_proj.weight.grad = v.k_proj.weight.grad = None
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None
        model.train(was)
    out = []
    for g, v in zip(grads, views):
        shape = (v.num_heads, v.head_k_dim, v.q_proj.in_features)
        out.append({k: t.view(shape).cpu() for k, t in g.items()})
    return out


def mqar_calibration(model, task: dict, settings: dict, seed: int) -> dict:
    """calib.pt-format statistics from MQAR sequences (LM-loss grads replaced by MQAR-loss grads)."""
    from lapr.profiling.calibrate import calibrate

    c = settings["calib"]
    bs = [mqar.make_batch(c["batch_size"], seed + 2 * 10**6 + i, **task) for i in range(c["n_batches"])]
    calib = calibrate(model, [b.inputs for b in bs], rows=c["rows"], seed=seed, model_name="mqar",
                      meta={"source": "mqar", "grads": "mqar loss"})
    for layer, g in zip(calib["layers"], mqar_grads(model, bs)):
        layer.update(g)
    return calib


def _recall_rows(model, batch, noises, bs, seed) -> list[dict]:
    rows = []
    for sigma in noises:
        r = mqar.recall(model, batch, batch_size=bs, noise=float(sigma), seed=seed + 7)
        rows += [{"noise": float(sigma), "metric": "recall", "value": r["recall"], "n": r["queries"]},
                 {"noise": float(sigma), "metric": "loss", "value": r["loss"], "n": r["queries"]}]
    return rows


def evaluate_checkpoint(model, task: dict, settings: dict, log=print) -> tuple[pd.DataFrame, dict]:
    """All rows of one MQAR model (without the model column) and an info dict."""
    from lapr.heads import apply, methods
    from lapr.heads.table import head_table
    from lapr.models import family
    from lapr.pruning import surgery

    seed, noises, bs = settings["seed"], settings["noise"], settings["batch_size"]
    batch = mqar.make_batch(settings["eval_n"], seed + 3 * 10**6, **task)
    views = family(model).attention(model)
    d_k = views[0].head_k_dim
    full = apply.state_accounting(model)["state_bytes_full"]
    base = {"family": model.config.model_type, "state_bytes_full": full}
    rows, info = [], {"seconds": {}}

    t0 = time.perf_counter()
    for r in _recall_rows(model, batch, noises, bs, seed):
        rows.append({**base, **r, "kind": "none", "method": "none", "ratio": 0.0, "d_k": d_k, "heads_removed": 0,
                     "state_bytes": full, "state_saved_frac": 0.0, "application": "none"})
    info["seconds"]["none"] = time.perf_counter() - t0
    log(f"[mqar-eval] unpruned recall {rows[0]['value']:.4f}", flush=True)

    ch = settings["channel"]
    if ch["methods"]:
        from lapr.pruning import select
        from lapr.pruning.ratio import kept_dim

        t0 = time.perf_counter()
        calib = mqar_calibration(model, task, settings, seed)
        info["seconds"]["calibration"] = time.perf_counter() - t0
        for method in ch["methods"]:
            for ratio in ch["ratios"]:
                t0 = time.perf_counter()
                kept = kept_dim(d_k, ratio, ch["multiple"])
                keep = select.choose(model, method, kept, calib=calib, seed=seed)
                pruned = surgery.prune_channels(model, keep).eval()
                sb = sum(surgery.state_bytes(pruned))
                new = _recall_rows(pruned, batch, noises, bs, seed)
                for r in new:
                    rows.append({**base, **r, "kind": "channel", "method": method, "ratio": ratio, "d_k": kept,
                                 "heads_removed": 0, "state_bytes": sb, "state_saved_frac": 1 - sb / full,
                                 "application": "structural"})
                info["seconds"][f"channel/{method}/{ratio}"] = time.perf_counter() - t0
                log(f"[mqar-eval] channel {method} r={ratio} (d_k {kept}): recall {new[0]['value']:.4f}", flush=True)

    hd = settings["heads"]
    if hd["methods"]:
        table = head_table(model, mqar.make_batch(hd["profile_n"], seed + 4 * 10**6, **task).inputs)
        info["head_table"] = table.to_dict("records")
        info["plans"] = {}
        for method in hd["methods"]:
            for budget in hd["budgets"]:
                t0 = time.perf_counter()
                plan = methods.select_heads(table, method, budget, hd["scope"], hd["alpha"], seed, hd["min_keep"])
                how, why = apply.plan_application(model, plan.removed, hd["application"])
                acc = apply.state_accounting(model, plan.removed)
                if how == "structural":
                    new = _recall_rows(apply.remove_heads(model, plan.removed).eval(), batch, noises, bs, seed)
                else:
                    with apply.masked(model, plan.removed):
                        new = _recall_rows(model, batch, noises, bs, seed)
                summ = plan.summary()
                info["plans"][f"{method}/{budget}"] = {**summ, "application": how, "structural_blocked_by": why}
                for r in new:
                    rows.append({**base, **r, "kind": "head", "method": method, "ratio": budget, "d_k": d_k,
                                 "heads_removed": len(plan.removed), "removed_low": summ.get("removed_low"),
                                 "removed_high": summ.get("removed_high"), "state_bytes": acc["state_bytes"],
                                 "state_saved_frac": acc["state_saved_frac"], "application": how})
                info["seconds"][f"head/{method}/{budget}"] = time.perf_counter() - t0
                log(f"[mqar-eval] heads {method} b={budget} {plan.removed} ({how}): recall {new[0]['value']:.4f}",
                    flush=True)
    return pd.DataFrame(rows), info


def eval_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="MQAR checkpoint directory (mqar-train output)")
    parser.add_argument("--out", required=True, help="tidy CSV to write")
    parser.add_argument("--model-name", default=None, help="value of the `model` column (default: --model's name)")
    parser.add_argument("--settings", default="{}", help="JSON object; keys: " + ", ".join(Eval.keys()))
    parser.add_argument("--seed", type=int, default=None, help="overrides settings.seed")


def load_mqar(model_dir, device=None):
    """(model, task) of an mqar-train checkpoint directory."""
    from lapr.models import load_model

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: no checkpoint there (config.json missing)")
    if not (model_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: metrics.json missing (not an mqar-train output?)")
    task = json.loads((model_dir / "metrics.json").read_text())["task"]
    device = _device(device)
    return load_model(model_dir, device=device, dtype=torch.float32), task


def check_head_budgets(model, hd: dict) -> None:
    """Every head budget is possible for this model (e.g. none removes every head), checked before
    the channel pruning runs: the counts depend on the head layout only, not on the scores."""
    from lapr.heads.methods import select_heads
    from lapr.heads.stage import model_heads

    if hd["methods"]:
        for budget in hd["budgets"]:
            select_heads(model_heads(model), "random", budget, hd["scope"], hd["alpha"], 0, hd["min_keep"])


def eval_run(args: argparse.Namespace) -> None:
    from lapr import paths, provenance

    settings = resolve_eval_settings(args.settings)
    if args.seed is not None:
        settings["seed"] = int(args.seed)
    out = Path(args.out)
    sidecar = out.with_name(out.stem + ".provenance.json")
    paths.check_outputs({"--out": [out, sidecar]}, {"--model": args.model})
    start = time.perf_counter()
    model, task = load_mqar(args.model, settings["device"])
    check_head_budgets(model, settings["heads"])
    name = args.model_name or Path(args.model).name
    df, info = evaluate_checkpoint(model, task, settings)
    df.insert(0, "model", name)
    df = df.reindex(columns=COLUMNS)
    info["seconds"]["total"] = time.perf_counter() - start
    provenance.write_json(sidecar, provenance.record(
        settings, settings["seed"], next(model.parameters()).device, stage="mqar-eval", model_dir=str(args.model),
        model=name, task=task, **info))
    provenance.write_table(out, df)
    print(f"[mqar-eval] wrote {len(df)} rows to {out} in {info['seconds']['total']:.1f} s", flush=True)


__all__ = ["COLUMNS", "Eval", "Train", "eval_add_arguments", "eval_run", "evaluate_checkpoint",
           "load_mqar", "mqar_calibration", "mqar_grads", "resolve_eval_settings", "resolve_train_settings",
           "train_add_arguments", "train_model", "train_run"]
