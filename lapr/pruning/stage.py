"""`prune` stage: one (model, method), several ratios in one process -> a checkpoint per ratio.

    python -m lapr prune --model results/P/models/M --calib results/P/profile/M/calib.pt \\
        --method strong_rrqr --ratio 0.25 0.5 0.75 \\
        --out results/P/pruned/M/strong_rrqr/0.25 results/P/pruned/M/strong_rrqr/0.5 \\
              results/P/pruned/M/strong_rrqr/0.75 \\
        --settings '{"multiple": 1, "seed": 0, "recovery": {"enabled": false}}'

Several ratios share one process: `--ratio` and `--out` take one or more values, paired in
order (same count, distinct outs), so the workflow runs one job per (model, method) and pays the
imports (~10 s on a small CPU machine), the model load, calib.pt and the recovery token batches
once instead of once per ratio. Each ratio's output equals a single-ratio run's: the unpruned
model is never modified (surgery builds a new model; the distillation teacher is a per-ratio
copy) and recovery replays the same token batches for every ratio. A single ratio is fine too.

Steps: validate the arguments for EVERY ratio (unknown method, --ratio/--out counts that
differ, duplicate outs, an out that is, holds or lies in an input, ratio outside (0, 1), a
ratio that leaves no channel, a missing config.json or calib.pt: ValueError / FileNotFoundError
before any work) -> load calib.pt (refused when it was recorded for another model) -> load the
unpruned model on CPU in float32 (and the recovery batches) once -> per ratio: per-layer
channel choice (lapr.pruning.select.choose) -> surgery (lapr.pruning.surgery.prune_channels) ->
optional recovery (lapr.pruning.recovery) -> write, atomically, that ratio's --out directory with
the checkpoint (config.json + weights, in the source checkpoint's dtype), the tokenizer files
copied from --model, pruning.json (+ provenance.json), pca_basis.pt for PCA (pca, pca_qk), recovery_log.csv
if recovery ran. A failure at a later ratio leaves the earlier ratios' directories written.

Settings (JSON object): the Prune model below (multiple, seed, recovery: lapr.pruning.recovery.Recovery,
device); `methods` and `ratios`, the workflow's grid, are accepted and ignored.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from lapr import paths, provenance
from lapr.pruning.channels import ROTATIONS
from lapr.pruning.ratio import check_method, check_ratio, kept_dim
from lapr.pruning.recovery import Recovery
from lapr.settings import Settings, setting, settings_object

GRID_KEYS = ("methods", "ratios")  # the workflow's grid (one job per method, --ratio): accepted, ignored


@dataclass
class Prune(Settings):
    """Settings of `lapr prune` (the config's `prune` section, less its grid: `methods`, `ratios`)."""

    SECTION = "prune"
    multiple: int = setting(1, "kept d_k rounded down to a multiple of it (kernel-friendly sizes)", low=1)
    seed: int = setting(0, "selection seed (random) and recovery seed; --seed overrides it", low=0)
    recovery: Recovery = setting(Recovery())
    device: str | None = setting(None, "device for recovery fine-tuning (null: auto; surgery always runs on CPU)")

    @classmethod
    def parse(cls, raw=None, where=None):
        raw = settings_object({} if raw is None else raw)
        return super().parse({k: v for k, v in raw.items() if k not in GRID_KEYS}, where)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
                   "tokenizer.model", "chat_template.jinja", "chat_template.json")

SELECTION_NOTE = ("channel selection: the same indices are dropped from q_proj rows, k_proj rows "
                  "and the q/k short-conv channels; exact (a dropped channel commutes with the "
                  "depthwise conv and its SiLU, and the in-kernel L2 norm runs over the kept "
                  "channels), i.e. equal to the unpruned model with those channels zeroed")
PCA_BASIS = {
    "pca": "top-d_k' eigenvectors of the mean-centred covariance of the L2-normalised keys over all "
           "calibration tokens (paper A's PCA as LAP's code computes it)",
    "pca_qk": "top-d_k' eigenvectors of the uncentred second moment of the stacked q and k "
              "post-conv, pre-L2-norm activations (lapr's variant)",
}
PCA_NOTE = ("PCA rotation absorbed into q_proj/k_proj rows (W' = U^T W per head, U the {basis}); "
            "the depthwise short conv "
            "does not commute with a rotation: new channel j gets kernel sum_c U_cj^2 w_c and "
            "bias U^T b (exact only when a head's q/k kernels are equal and the conv has no "
            "activation; fla's q/k convs apply SiLU, so this is an approximation whose kernel "
            "mismatch per layer is recorded as q_conv_mismatch / k_conv_mismatch)")
SCALE_NOTE = ("the delta-rule kernel scales q by d_k**-0.5 (before) and d_k'**-0.5 (after), so "
              "pruned layers scale attention outputs by output_factor = sqrt(d_k/d_k'); the "
              "per-head output RMSNorm cancels this only through its eps, which is comparable "
              "to ms(o) in these models, so it is not absorbed: rel_logit_error_parent_scale is "
              "the pruned model vs the unpruned one with the pruned channels zeroed, run at the "
              "parent's scale (1.5-2 % on the embedded checkpoints), rel_logit_error_pruned_scale "
              "the same at the pruned scale (round-off, ~1e-7, for a selection; PCA adds its "
              "conv approximation); measured after surgery, before any recovery, on 'tokens' "
              "(batch x length) fixed random ids (seed 0), see lapr.pruning.surgery.scale_check")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="unpruned HF checkpoint directory")
    parser.add_argument("--calib", default=None,
                        help="calib.pt from the profiling stage (needed by wanda, taylor, "
                             "pivoted_qr, strong_rrqr, pca, pca_qk)")
    parser.add_argument("--method", required=True, help="channel method (see ratio.ALL_METHODS)")
    parser.add_argument("--ratio", required=True, nargs="+",
                        help="fraction(s) of d_k removed, each in (0, 1); one per --out")
    parser.add_argument("--out", required=True, nargs="+",
                        help="output checkpoint directory per --ratio, paired in order")
    parser.add_argument("--settings", default="{}", help="JSON object (stage settings)")
    parser.add_argument("--seed", type=int, default=None, help="overrides settings.seed")
    parser.add_argument("--device", default=None, help="overrides settings.device (recovery)")


def parse_settings(text: str | dict | None) -> dict:
    """The prune settings (a dict or JSON string) with every key filled in (Prune)."""
    return Prune.parse(text or {}).as_dict()


def copy_tokenizer(src: Path, dst: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def _source_dtype(model_dir: Path) -> torch.dtype:
    config = json.loads((model_dir / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name).replace("torch.", ""), None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def config_head_k_dim(model_dir: Path) -> int | None:
    """Key dim per head read from config.json (None for a family this does not know)."""
    from lapr.models import FAMILIES

    config = json.loads((model_dir / "config.json").read_text())
    fam = FAMILIES.get(config.get("model_type"))
    return None if fam is None else fam.head_k_dim_of(config)


def _values(value) -> list:
    """argparse gives lists (nargs="+"); a hand-made Namespace may hold one value."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def ratio_outs(args) -> list[tuple[float, Path]]:
    """(ratio, out) pairs from --ratio/--out, paired in order; every ratio in (0, 1)."""
    ratios, outs = _values(args.ratio), _values(args.out)
    if not ratios or len(ratios) != len(outs):
        raise ValueError(f"--ratio has {len(ratios)} value(s) and --out has {len(outs)}: "
                         f"give one output directory per ratio, paired in order")
    seen: dict[Path, str] = {}
    for out in outs:
        key = Path(out).resolve()
        if key in seen:
            raise ValueError(f"--out {out} is given twice (as {seen[key]!r} and {str(out)!r}): "
                             f"each ratio needs its own output directory")
        seen[key] = str(out)
    return [(check_ratio(r), Path(out)) for r, out in zip(ratios, outs)]


def check_inputs(args) -> tuple[dict, list[tuple[float, Path]]]:
    """Every check that needs no model, for every ratio: (parsed settings, (ratio, out) pairs)."""
    settings = parse_settings(args.settings)
    check_method(args.method)
    jobs = ratio_outs(args)
    paths.check_outputs({"--out": [str(out) for _, out in jobs]},
                        {"--model": args.model, "--calib": args.calib,
                         "settings.recovery.data": paths.local(settings["recovery"]["data"])})
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir} is not a Hugging Face checkpoint "
                                f"(no config.json)")
    d_k = config_head_k_dim(model_dir)
    if d_k is not None:
        for ratio, _ in jobs:
            kept_dim(d_k, ratio, settings["multiple"])
    from lapr.pruning.select import needs_calib

    if needs_calib(args.method):
        if not args.calib:
            raise ValueError(f"method {args.method!r} needs --calib (calib.pt from the "
                             f"profiling stage)")
        if not Path(args.calib).is_file():
            raise FileNotFoundError(f"--calib {args.calib} not found")
    return settings, jobs


def prune(args) -> list[dict]:
    """Run the stage; returns the pruning.json records, one per --ratio, in order."""
    from lapr.models import family, load_model
    from lapr.pruning.recovery import token_batches
    from lapr.pruning.select import check_calib, load_calib, needs_calib

    settings, jobs = check_inputs(args)
    seed = settings["seed"] if args.seed is None else args.seed
    device = args.device or settings["device"]
    model_dir = Path(args.model)
    # calib.pt first: a foreign or broken file is refused before the model is loaded
    calib = load_calib(args.calib, model_dir=model_dir) if needs_calib(args.method) else None

    model = load_model(model_dir, "cpu", torch.float32)
    views = family(model).attention(model)
    d_k = {v.head_k_dim for v in views}
    if len(d_k) != 1:
        raise ValueError(f"{model_dir}: layers have different key dims {sorted(d_k)}")
    d_k = d_k.pop()
    # every ratio's kept dim before anything is written (config_head_k_dim may not know the family)
    kept = [kept_dim(d_k, ratio, settings["multiple"]) for ratio, _ in jobs]
    if calib is not None:
        check_calib(calib, model, f"--calib {args.calib}")

    rec = settings["recovery"]
    batches = None
    if rec["enabled"]:
        from lapr.models import resolve_device

        device = resolve_device(device)
        # recovery takes exactly `steps` batches of this (seeded, ratio-independent) stream:
        # drawn once, replayed from the start for every ratio
        batches = list(itertools.islice(token_batches(model_dir, rec, seed), rec["steps"]))

    print(f"prune {model_dir} with {args.method}: {len(jobs)} ratio(s) "
          f"{[r for r, _ in jobs]} in one process, d_k {d_k}, multiple {settings['multiple']}")
    records = []
    for i, ((ratio, out), k) in enumerate(zip(jobs, kept), 1):
        print(f"[{i}/{len(jobs)}] ratio {ratio}: d_k {d_k} -> {k} -> {out}", flush=True)
        records.append(_prune_one(args, settings, model, views, calib, ratio, k, out, seed,
                                  device, batches))
    return records


def _prune_one(args, settings: dict, model, views, calib, ratio: float, kept: int, out: Path,
               seed: int, device, batches) -> dict:
    """One ratio: choose, surgery, optional recovery, atomic write of `out`. `model` is left
    as it was (prune_channels builds a new model; recovery's teacher is a deep copy)."""
    from lapr.pruning.recovery import recover
    from lapr.pruning.select import choose
    from lapr.pruning.surgery import (conv_mismatch, conv_state_bytes, prune_channels,
                                      scale_check, state_bytes)

    model_dir = Path(args.model)
    d_k = views[0].head_k_dim
    keep = choose(model, args.method, kept, calib, seed)
    pruned = prune_channels(model, keep)
    rotation = args.method in ROTATIONS
    scale = scale_check(model, pruned, keep)  # the surgery's output, before any recovery

    rec = settings["recovery"]
    log = []
    if rec["enabled"]:
        # recover() moves the teacher to `device` and freezes it: give it a copy, so the
        # unpruned model stays on CPU, untouched, for the next ratio
        teacher = copy.deepcopy(model) if rec["distill"] else None
        pruned, log = recover(pruned, iter(batches), rec, teacher=teacher, device=device,
                              seed=seed)
        del teacher
        pruned = pruned.to("cpu")

    before, after = state_bytes(model), state_bytes(pruned)
    conv_before, conv_after = conv_state_bytes(model), conv_state_bytes(pruned)
    mismatch = conv_mismatch(model, keep) if rotation else [{} for _ in views]
    layers = []
    for view, entry, b, a, extra in zip(views, keep, before, after, mismatch):
        layers.append({
            "layer": view.index, "heads": view.num_heads, "value_heads": view.num_v_heads,
            "d_k_before": view.head_k_dim, "d_k_after": kept, "d_v": view.head_v_dim,
            "kept": None if rotation else entry.tolist(),
            "state_bytes_before": b, "state_bytes_after": a,
            **{k: v for k, v in extra.items() if k != "layer"},
        })
    record = {
        "method": args.method, "kind": "rotation" if rotation else "selection",
        "ratio": ratio, "effective_ratio": 1 - kept / d_k, "multiple": settings["multiple"],
        "seed": seed, "family": model.config.model_type, "model": str(model_dir),
        "calib": str(args.calib) if calib is not None else None,
        "calib_meta": calib.get("meta") if calib is not None else None,
        "d_k_before": d_k, "d_k_after": kept, "d_v": views[0].head_v_dim,
        "layers": layers,
        "state_bytes_per_sequence": {"before": sum(before), "after": sum(after),
                                     "dtype": "float32", "fraction": sum(after) / sum(before)},
        "conv_state_bytes_per_sequence": {"before": sum(conv_before), "after": sum(conv_after),
                                          "dtype": "float32"},
        "parameters": {"before": sum(p.numel() for p in model.parameters()),
                       "after": sum(p.numel() for p in pruned.parameters())},
        "short_conv": (PCA_NOTE.format(basis=PCA_BASIS[args.method]) if rotation
                       else SELECTION_NOTE),
        "scale": {**scale, "note": SCALE_NOTE},
        "recovery": {**rec, "steps_run": len(log),
                     "first_loss": log[0]["loss"] if log else None,
                     "last_loss": log[-1]["loss"] if log else None},
    }
    prov = provenance.record({"method": args.method, "ratio": ratio, **settings}, seed,
                             device if rec["enabled"] else "cpu",
                             model=str(model_dir), calib=record["calib"])
    record["provenance"] = prov

    with provenance.atomic_dir(out) as tmp:
        pruned.to(_source_dtype(model_dir)).save_pretrained(tmp)
        record["tokenizer_files"] = copy_tokenizer(model_dir, tmp)
        if rotation:
            torch.save({"bases": [b.contiguous() for b in keep], "method": args.method},
                       tmp / "pca_basis.pt")
        if log:
            import pandas as pd

            pd.DataFrame(log).to_csv(tmp / "recovery_log.csv", index=False)
        provenance.write_json(tmp / "pruning.json", record)
        provenance.write_json(tmp / "provenance.json", prov)
    print(f"wrote {out}: state {sum(before)} -> {sum(after)} bytes per sequence", flush=True)
    return record


def run(args: argparse.Namespace) -> None:
    prune(args)
