"""`bench` stage: op-level kernel grid or model-level throughput, to a CSV with provenance beside.

    python -m lapr bench --settings '{"mode": "ops", "d_k": [128, 64], ...}' --out results/P/bench/ops_cpu.csv
    python -m lapr bench --settings '{"mode": "model"}' --model results/P/pruned/M/METH/0.5 --out .../0.5_cpu.csv

The device label ('cpu' | 'cuda') is a column of every row and must appear in the --out file name
(write '{device}' in --out to have it filled in), so GPU and CPU numbers never share a file.
Provenance (git commit, torch/triton/fla versions, GPU name, driver, settings) goes to
`<out stem>.provenance.json` beside the CSV.

Settings (defaults in code; grids take an int or a list):
  common: mode ('ops' | 'model'), device ('auto' | 'cpu' | 'cuda'), dtype ('auto' | 'bfloat16' |
          'float16' | 'float32'), repeats, warmup (null = until stable), min_warmup, max_warmup,
          n_inputs (input sets rotated; null = enough to exceed 2x L2 on GPU, 3 on CPU),
          threads (CPU intra-op threads during the run; null = torch's default),
          decode_modes (list of 'graph' | 'eager': decode rows per mode; default both on cuda, eager
          on cpu; 'graph' = CUDA-graph replay of the step, needs CUDA; see lapr.bench.graph_decode)
  ops:    families, phases, impls ('fla' on cuda, 'torch' on cpu by default), d_k, extra_d_k,
          B, T, H, d_v, budget_s (shapes not started within it are recorded as skipped)
  model:  prefill_batch, prefill_len, decode_batch, prompt_len, labels (dict added to every row)
"""
from __future__ import annotations

import argparse
import functools
import subprocess
import time
from pathlib import Path

import torch

from lapr import paths, provenance
from lapr.bench import models, ops, timing
from lapr.bench.tables import write_rows
from lapr.settings import settings_object

COMMON_KEYS = {"mode", "device", "dtype", "repeats", "warmup", "min_warmup", "max_warmup", "n_inputs", "threads",
               "decode_modes"}
OPS_KEYS = COMMON_KEYS | {"families", "phases", "impls", "d_k", "extra_d_k", "B", "T", "H", "d_v", "budget_s"}
MODEL_KEYS = COMMON_KEYS | {"prefill_batch", "prefill_len", "decode_batch", "prompt_len", "labels"}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", default="{}", help="JSON object: the bench section of the config")
    parser.add_argument("--out", required=True, help="CSV path; must name the device (or contain '{device}')")
    parser.add_argument("--model", default=None, help="HF checkpoint dir (mode 'model')")
    parser.add_argument("--seed", type=int, default=0)


def parse_settings(text_or_dict) -> dict:
    settings = dict(settings_object(text_or_dict or {}))
    mode = settings.setdefault("mode", "ops")
    known = {"ops": OPS_KEYS, "model": MODEL_KEYS}.get(mode)
    if known is None:
        raise ValueError(f"bench settings: 'mode' must be 'ops' or 'model', got {mode!r}")
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"bench settings (mode {mode!r}): unknown key(s) {unknown}; known: {sorted(known)}")
    return settings


def resolve_device(name: str | None) -> torch.device:
    name = name or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"bench settings: 'device' must be 'auto', 'cpu' or 'cuda', got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("bench settings: device 'cuda' asked for, but torch sees no CUDA device")
    return device


def resolve_dtype(name: str | None, device) -> torch.dtype:
    if name in (None, "auto"):
        return ops.default_dtype(device)
    if name not in DTYPES:
        raise ValueError(f"bench settings: 'dtype' must be 'auto' or one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def out_path(out, device) -> Path:
    """--out with '{device}' filled in; refuses a file name that does not name the device."""
    label = timing.device_label(device)
    path = Path(str(out).replace("{device}", label))
    if label not in path.name:
        raise ValueError(f"--out {path}: the file name must name the device ({label!r}, e.g. "
                         f"{path.stem}_{label}{path.suffix}) so GPU and CPU numbers never share a file; "
                         f"write '{{device}}' in --out to have it filled in")
    return path


def timing_kwargs(settings: dict) -> dict:
    return {k: settings[k] for k in ("repeats", "warmup", "min_warmup", "max_warmup") if k in settings}


def resolve(settings: dict, device) -> dict:
    """The full plan of a run: every setting with its default filled in and validated (recorded in
    the provenance as 'resolved')."""
    label = timing.device_label(device)
    plan = {"mode": settings["mode"], "device": label,
            "dtype": str(resolve_dtype(settings.get("dtype"), device)).removeprefix("torch."),
            "n_inputs": settings.get("n_inputs"), "threads": settings.get("threads"),
            "decode_modes": ops.decode_modes_for(device, settings.get("decode_modes"))}
    if settings["mode"] == "ops":
        plan["impls"] = ops.str_list(settings, "impls", ops.default_impls(device), ops.IMPLS)
        if "fla" in plan["impls"] and label != "cuda":
            raise ValueError("bench settings: impl 'fla' needs CUDA (fla's kernels are Triton); use 'torch' on CPU")
        plan["families"] = ops.str_list(settings, "families", ops.FAMILIES, ops.FAMILIES)
        plan["phases"] = ops.str_list(settings, "phases", ops.PHASES, ops.PHASES)
        plan["d_k"] = ops.d_k_values(settings)
        plan.update({k: ops.int_list(settings, k, ops.GRID_DEFAULTS[label][k]) for k in ("B", "T", "H", "d_v")})
        plan["budget_s"] = settings.get("budget_s")
        plan["timing"] = {**ops.TIMING_DEFAULTS, **timing_kwargs(settings)}
    else:
        defaults = models.MODEL_DEFAULTS[label]
        for key in ("prefill_batch", "prefill_len", "decode_batch"):
            plan[key] = ops.int_list(settings, key, defaults[key])
        plan["prompt_len"] = ops.int_list(settings, "prompt_len", defaults["prompt_len"])[0]
        plan["n_inputs"] = plan["n_inputs"] or 3
        plan["labels"] = settings.get("labels") or {}
        plan["timing"] = {**ops.TIMING_DEFAULTS, "repeats": defaults["repeats"], **timing_kwargs(settings)}
    return plan


def hardware_facts(device) -> dict:
    """What the rows were measured on, beyond provenance.device_info: GPU name, driver, SMs, L2."""
    facts = {"device_label": timing.device_label(device), "device_name": ops.device_name(device),
             "torch_threads": torch.get_num_threads()}
    if facts["device_label"] == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(gpu=props.name, sm_count=props.multi_processor_count, total_memory_bytes=props.total_memory,
                     l2_cache_bytes=timing.l2_cache_bytes(device), torch_cuda=torch.version.cuda)
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout
            name, driver, sm_clock, power = (x.strip() for x in out.strip().splitlines()[0].split(","))
            facts.update(nvidia_smi_name=name, driver=driver, max_sm_clock=sm_clock, power_limit=power)
        except (OSError, subprocess.SubprocessError, IndexError, ValueError):
            facts["driver"] = None
    return facts


def provenance_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".provenance.json")


def write_provenance(csv_path: Path, settings: dict, seed: int, device, rows: list[dict], **extra) -> Path:
    meta = provenance.record(settings=settings, seed=seed, device=device, bench=hardware_facts(device),
                             rows=len(rows), errors=sum(bool(r.get("error")) for r in rows),
                             result=csv_path.name, **extra)
    return provenance.write_json(provenance_path(csv_path), meta)


def run_ops(plan: dict, device, seed: int = 0, log=print) -> list[dict]:
    """Bench the op grid of a resolved plan (rows as ops.COLUMNS)."""
    shapes = ops.expand_grid(plan, device)
    deadline = time.monotonic() + float(plan["budget_s"]) if plan["budget_s"] else None
    log(f"bench ops: {len(shapes)} shapes x {plan['impls']} on {plan['device']} ({plan['dtype']})")
    return ops.run_grid(shapes, plan["impls"], device=device, dtype=DTYPES[plan["dtype"]], seed=seed,
                        n_inputs=plan["n_inputs"], log=log, deadline=deadline,
                        decode_modes=plan["decode_modes"], **plan["timing"])


def run_model(plan: dict, device, model_dir, seed: int = 0, log=print) -> list[dict]:
    """Bench one checkpoint dir with a resolved plan (rows as models.MODEL_COLUMNS)."""
    log(f"bench model: {model_dir} on {plan['device']} ({plan['dtype']})")
    kw = {k: plan[k] for k in ("prefill_batch", "prefill_len", "decode_batch", "prompt_len", "n_inputs", "labels",
                               "decode_modes")}
    return models.bench_checkpoint(model_dir, device=device, dtype=DTYPES[plan["dtype"]], seed=seed, log=log,
                                   **kw, **plan["timing"])


def run(args: argparse.Namespace) -> None:
    settings = parse_settings(args.settings)
    device = resolve_device(settings.get("device"))
    out = out_path(args.out, device)
    plan = resolve(settings, device)
    seed = getattr(args, "seed", 0) or 0
    model_dir = getattr(args, "model", None)
    if plan["mode"] == "ops" and model_dir:
        raise ValueError("bench: --model is for mode 'model'; mode 'ops' benches kernels only")
    if plan["mode"] == "model" and not model_dir:
        raise ValueError("bench: mode 'model' needs --model DIR (a Hugging Face checkpoint dir)")
    paths.check_outputs({"--out": [out, provenance_path(out)]}, {"--model": model_dir})
    log = functools.partial(print, flush=True)
    with timing.torch_threads(plan["threads"]):
        if plan["mode"] == "ops":
            rows, columns = run_ops(plan, device, seed, log), ops.COLUMNS
        else:
            rows, columns = run_model(plan, device, model_dir, seed, log), models.MODEL_COLUMNS
        write_rows(out, rows, columns)
        write_provenance(out, settings, seed, device, rows, resolved=plan,
                         **({"model_dir": str(model_dir)} if model_dir else {}))
    log(f"bench: wrote {len(rows)} rows to {out}")
