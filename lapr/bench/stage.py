"""`bench` stage: op-level kernel grid or model-level throughput, to a CSV with provenance beside.

    python -m lapr bench --settings '{"mode": "ops", "d_k": [128, 64], ...}' --out results/P/bench/ops_cpu.csv
    python -m lapr bench --settings '{"mode": "model"}' --model results/P/pruned/M/METH/0.5 --out .../0.5_cpu.csv

The device label ('cpu' | 'cuda') is a column of every row and must appear in the --out file name
(write '{device}' in --out to have it filled in), so GPU and CPU numbers never share a file.
Provenance (git commit, torch/triton/fla versions, GPU name, driver, settings) goes to
`<out stem>.provenance.json` beside the CSV.

Settings: `mode` ('ops' | 'model') picks the model, Ops or ModelBench below (their defaults and
checks; grids take an int or a list; null: the device's default, ops.GRID_DEFAULTS /
models.MODEL_DEFAULTS, filled in by `resolve`).
"""
from __future__ import annotations

import argparse
import functools
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lapr import paths, provenance
from lapr.bench import models, ops, timing
from lapr.bench.tables import write_rows
from lapr.settings import Settings, SettingsError, setting, settings_object

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
GRID = dict(low=1, min_items=1, items=dict(low=1))  # a grid axis: an integer or a non-empty list of them
Grid = int | list[int]
Names = str | list[str]  # a name or a non-empty list of distinct ones


def names(choices) -> dict:
    """The checks of a Names setting whose names are among `choices`."""
    return dict(choices=tuple(choices), min_items=1, unique=True, items=dict(choices=tuple(choices)))


@dataclass
class Timing(Settings):
    """What both bench modes share: device, dtype and the timer (lapr.bench.timing)."""

    device: str = setting("auto", "auto: cuda when available", choices=("auto", "cpu", "cuda"))
    dtype: str = setting("auto", "auto: bfloat16 on cuda, float32 on cpu", choices=("auto", *DTYPES))
    repeats: int | None = setting(None, "timed calls per shape (null: ops.TIMING_DEFAULTS; mode model: "
                                  "models.MODEL_DEFAULTS of the device)", low=1)
    warmup: int | None = setting(None, "untimed calls first (null: until the time is stable)", low=0)
    min_warmup: int = setting(ops.TIMING_DEFAULTS["min_warmup"], low=0)
    max_warmup: int = setting(ops.TIMING_DEFAULTS["max_warmup"], low=0)
    n_inputs: int | None = setting(None, "input sets rotated (null: enough to exceed 2x L2 on GPU, 3 on CPU)",
                                   low=1)
    threads: int | None = setting(None, "CPU intra-op threads during the run (null: torch's default)", low=1)
    decode_modes: Names | None = setting(None, "decode timed as CUDA-graph replays and/or eager calls "
                                         "(null: both on cuda, eager on cpu; graph needs cuda)", **names(ops.DECODE_MODES))


@dataclass
class Ops(Timing):
    """Settings of `lapr bench` in mode 'ops', the kernel grid (the config's `bench.ops`)."""

    SECTION = "bench.ops"
    families: Names = setting(list(ops.FAMILIES), "families with a lapr adapter", **names(ops.FAMILIES))
    phases: Names = setting(list(ops.PHASES), **names(ops.PHASES))
    impls: Names | None = setting(None, "kernels (null: fla on cuda, torch on cpu; fla needs cuda)",
                                  **names(ops.IMPLS))
    d_k: Grid = setting(list(ops.DEFAULT_D_K), "key dims benched", **GRID)
    extra_d_k: Grid | None = setting(None, "more key dims (the workflow: every d_k the pruning grid makes)", **GRID)
    B: Grid | None = setting(None, "batch sizes (null: ops.GRID_DEFAULTS of the device)", **GRID)
    T: Grid | None = setting(None, "sequence lengths (null: ops.GRID_DEFAULTS)", **GRID)
    H: Grid | None = setting(None, "heads (null: ops.GRID_DEFAULTS)", **GRID)
    d_v: Grid | None = setting(None, "value dims (null: ops.GRID_DEFAULTS)", **GRID)
    budget_s: float | None = setting(None, "shapes not started within it are recorded as skipped", above=0)
    rounds: int = setting(1, "times the grid is timed in turn, `repeats` shared out, each shape's calls pooled "
                          "(ops.run_grid): a slow spell of the machine then falls on every shape alike", low=1)


@dataclass
class ModelBench(Timing):
    """Settings of `lapr bench` in mode 'model', one checkpoint (the config's `bench.model`)."""

    SECTION = "bench.model"
    prefill_batch: Grid | None = setting(None, "null: models.MODEL_DEFAULTS of the device", **GRID)
    prefill_len: Grid | None = setting(None, "null: models.MODEL_DEFAULTS", **GRID)
    decode_batch: Grid | None = setting(None, "null: models.MODEL_DEFAULTS", **GRID)
    prompt_len: Grid | None = setting(None, "the first value is used (null: models.MODEL_DEFAULTS)", **GRID)
    labels: dict[str, str | float | bool] = setting({}, "columns added to every row")


MODES = {"ops": Ops, "model": ModelBench}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", default="{}", help="JSON object: the bench section of the config")
    parser.add_argument("--out", required=True, help="CSV path; must name the device (or contain '{device}')")
    parser.add_argument("--model", default=None, help="HF checkpoint dir (mode 'model')")
    parser.add_argument("--seed", type=int, default=0)


def parse_settings(text_or_dict) -> dict:
    """The bench settings (a dict or JSON string; `mode` 'ops' by default) checked by the mode's
    model (Ops or ModelBench), every key filled in (null where the device decides: `resolve`)."""
    settings = dict(settings_object(text_or_dict or {}))
    mode = settings.pop("mode", "ops")
    if mode not in MODES:
        raise SettingsError("bench.mode", f"expected one of 'ops', 'model', got {mode!r}")
    return {"mode": mode, **MODES[mode].parse(settings).as_dict()}


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
    """A dtype name the models accept ('auto' or a key of DTYPES) as the torch dtype for `device`."""
    return ops.default_dtype(device) if name in (None, "auto") else DTYPES[name]


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
    """The timer's keys given in `settings` (lapr.bench.gpu_run's fixed grids)."""
    return {k: settings[k] for k in ("repeats", "warmup", "min_warmup", "max_warmup") if k in settings}


def _grid(value) -> list:
    """A grid axis or Names setting as a list."""
    return [value] if isinstance(value, int | str) else list(value)


def resolve(settings: dict, device) -> dict:
    """The full plan of a run (parse_settings' settings with the device's defaults filled in;
    recorded in the provenance as 'resolved')."""
    label = timing.device_label(device)
    plan = {"mode": settings["mode"], "device": label,
            "dtype": str(resolve_dtype(settings["dtype"], device)).removeprefix("torch."),
            "n_inputs": settings["n_inputs"], "threads": settings["threads"],
            "decode_modes": ops.decode_modes_for(device, settings["decode_modes"] and _grid(settings["decode_modes"]))}
    timed = {k: settings[k] for k in ("repeats", "warmup", "min_warmup", "max_warmup")}
    if settings["mode"] == "ops":
        plan["impls"] = _grid(settings["impls"] or ops.default_impls(device))
        if "fla" in plan["impls"] and label != "cuda":
            raise SettingsError("bench.ops.impls", "impl 'fla' needs CUDA (fla's kernels are Triton); use 'torch' "
                                "on CPU")
        plan["families"], plan["phases"] = _grid(settings["families"]), _grid(settings["phases"])
        plan["d_k"] = sorted(set(_grid(settings["d_k"])) | set(_grid(settings["extra_d_k"] or [])), reverse=True)
        plan.update({k: _grid(settings[k] or ops.GRID_DEFAULTS[label][k]) for k in ("B", "T", "H", "d_v")})
        plan["budget_s"], plan["rounds"] = settings["budget_s"], settings["rounds"]
        plan["timing"] = {**timed, "repeats": timed["repeats"] or ops.TIMING_DEFAULTS["repeats"]}
    else:
        defaults = models.MODEL_DEFAULTS[label]
        for key in ("prefill_batch", "prefill_len", "decode_batch"):
            plan[key] = _grid(settings[key] or defaults[key])
        plan["prompt_len"] = _grid(settings["prompt_len"] or defaults["prompt_len"])[0]
        plan["n_inputs"] = plan["n_inputs"] or 3
        plan["labels"] = settings["labels"]
        plan["timing"] = {**timed, "repeats": timed["repeats"] or defaults["repeats"]}
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
                        decode_modes=plan["decode_modes"], rounds=plan.get("rounds", 1), **plan["timing"])


def run_model(plan: dict, device, model_dir, seed: int = 0, log=print) -> list[dict]:
    """Bench one checkpoint dir with a resolved plan (rows as models.MODEL_COLUMNS)."""
    log(f"bench model: {model_dir} on {plan['device']} ({plan['dtype']})")
    kw = {k: plan[k] for k in ("prefill_batch", "prefill_len", "decode_batch", "prompt_len", "n_inputs", "labels",
                               "decode_modes")}
    return models.bench_checkpoint(model_dir, device=device, dtype=DTYPES[plan["dtype"]], seed=seed, log=log,
                                   **kw, **plan["timing"])


def run(args: argparse.Namespace) -> None:
    given = dict(settings_object(args.settings or {}))
    settings = parse_settings(given)
    device = resolve_device(settings["device"])
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
        write_provenance(out, {**given, "mode": settings["mode"]}, seed, device, rows, resolved=plan,
                         **({"model_dir": str(model_dir)} if model_dir else {}))
    log(f"bench: wrote {len(rows)} rows to {out}")
