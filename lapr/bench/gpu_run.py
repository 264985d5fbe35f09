"""One self-contained benchmark run for a lent GPU (op level + model level), within a time budget.

    python -m lapr.bench.gpu_run --out DIR                       # the H100 run (~7 min budget)
    python -m lapr.bench.gpu_run --out DIR --device cpu --dry    # smoke test: tiny shapes, CPU backend

Writes DIR/ops_<device>.csv, DIR/model_<device>.csv (rewritten atomically after every shape, so an
interrupted run keeps what it measured) and DIR/provenance.json (versions, GPU name, driver, the
settings below, elapsed time). Figures: `--figures FIG_DIR`, or later with
`lapr.bench.plots.make_figures([...csvs], fig_dir)`.

Op level: both families, prefill (chunk kernel) and decode (fused recurrent step with a state),
B 8, T 4096, H 16, d_v 128, d_k in 128, 64, 32, 96, 48 (run in that order, so the r = 0.5 pair comes
first). Model level: a freshly initialised model per family and d_k (hidden 2048, 4 layers,
16 heads, d_v 128, bf16; random weights time like trained ones), prefill B 8 x T 2048 and decode
steps at B 1 and 32 after a 64-token prompt. Everything is forward-only under inference_mode.
The first call of each shape (Triton compile + autotune) is timed separately and never counted.
Budget (--budget-s, default 420 s): the op grid may start shapes until 70 % of it has passed, the
model part until all of it has; a shape started just before its deadline still runs to the end
(a prefill shape's first call, with autotuning, can take about a minute). Shapes not started in
time are recorded as rows with error 'skipped: time budget exhausted'; any failing shape or model
is recorded as an error row and the run goes on.
"""
from __future__ import annotations

import argparse
import functools
import time
import traceback
from pathlib import Path

from lapr import provenance
from lapr.bench import models, ops, stage, timing
from lapr.bench.tables import write_rows

log = functools.partial(print, flush=True)

OPS = {"families": list(ops.FAMILIES), "phases": list(ops.PHASES), "d_k": [128, 64, 32, 96, 48],
       "B": 8, "T": 4096, "H": 16, "d_v": 128, "repeats": 100, "max_warmup": 50}
MODEL = {"families": list(ops.FAMILIES), "hidden_size": 2048, "num_layers": 4, "num_heads": 16, "head_v_dim": 128, "vocab_size": 32000,
         "d_k": [128, 64, 32], "prefill_batch": [8], "prefill_len": [2048], "decode_batch": [1, 32],
         "prompt_len": 64, "repeats": 50, "max_warmup": 30}
DRY_OPS = {**OPS, "d_k": [32, 16, 24], "B": 1, "T": 64, "H": 2, "d_v": 16, "repeats": 5, "max_warmup": 5}
DRY_MODEL = {**MODEL, "hidden_size": 64, "num_layers": 1, "num_heads": 2, "head_v_dim": 16, "vocab_size": 256,
             "d_k": [32, 16], "prefill_batch": [1], "prefill_len": [32], "decode_batch": [1], "prompt_len": 8,
             "repeats": 3, "max_warmup": 3}
OPS_SHARE = 0.7  # of the budget, for the op grid; the model part gets the rest (and whatever ops left)


def priority_order(shapes: list[ops.Shape], d_k_order: list[int]) -> list[ops.Shape]:
    """Shapes sorted by the position of their d_k in `d_k_order` (stable otherwise), so that the
    most wanted d_k run first for every family and phase before a budget can run out."""
    rank = {d: i for i, d in enumerate(d_k_order)}
    return sorted(shapes, key=lambda s: rank.get(s.d_k, len(rank)))


def run_ops(settings: dict, device, deadline: float, path: Path) -> list[dict]:
    shapes = priority_order(ops.expand_grid(settings, device), settings["d_k"])
    impls = ops.default_impls(device)
    log(f"== op grid: {len(shapes)} shapes x {impls}, dtype {ops.default_dtype(device)}; "
        f"{max(deadline - time.monotonic(), 0):.0f} s budget")
    return ops.run_grid(shapes, impls, device=device, log=log, deadline=deadline,
                        on_progress=functools.partial(write_rows, path, columns=ops.COLUMNS),
                        **stage.timing_kwargs(settings))


def model_spec(family: str, d_k: int, settings: dict) -> dict:
    return {"family": family, "hidden_size": settings["hidden_size"], "num_layers": settings["num_layers"],
            "num_heads": settings["num_heads"], "head_k_dim": d_k, "head_v_dim": settings["head_v_dim"],
            "vocab_size": settings["vocab_size"]}


def _skipped_model_rows(spec: dict, settings: dict, device, error: str) -> list[dict]:
    base = {"level": "model", "family": spec["family"], "impl": ops.default_impls(device)[0],
            "device": timing.device_label(device), "d_k": spec["head_k_dim"], "d_v": spec["head_v_dim"],
            "H": spec["num_heads"], "num_layers": spec["num_layers"], "hidden_size": spec["hidden_size"],
            "model": f"random-{spec['family']}-dk{spec['head_k_dim']}", "method": "none", "error": error}
    rows = [{**base, "phase": "prefill", "B": B, "T": T}
            for B in settings["prefill_batch"] for T in settings["prefill_len"]]
    return rows + [{**base, "phase": "decode", "B": B, "T": 1} for B in settings["decode_batch"]]


def run_models(settings: dict, device, deadline: float, path: Path) -> list[dict]:
    from lapr.models import build_model

    dtype = ops.default_dtype(device)
    write = functools.partial(write_rows, path, columns=models.MODEL_COLUMNS)
    jobs = [(d_k, fam) for d_k in settings["d_k"] for fam in settings["families"]]
    log(f"== model level: {len(jobs)} models, dtype {dtype}; {max(deadline - time.monotonic(), 0):.0f} s budget")
    rows: list[dict] = []
    for d_k, family in jobs:
        spec = model_spec(family, d_k, settings)
        if time.monotonic() > deadline:
            rows += _skipped_model_rows(spec, settings, device, "skipped: time budget exhausted")
            write(rows)
            continue
        model = None
        try:
            model = build_model(spec, seed=0).to(device=device, dtype=dtype).eval()
            rows += models.bench_model(
                model, device=device, prefill_batch=settings["prefill_batch"], prefill_len=settings["prefill_len"],
                decode_batch=settings["decode_batch"], prompt_len=settings["prompt_len"], log=log,
                labels={"model": f"random-{family}-dk{d_k}", "method": "none"},
                repeats=settings["repeats"], max_warmup=settings["max_warmup"])
        except Exception as exc:  # noqa: BLE001 — a model that fails to build must not end the run
            log(traceback.format_exc(limit=3))
            rows += _skipped_model_rows(spec, settings, device, ops.error_text(exc))
        finally:
            del model
            timing.release_cuda_memory(device)
        write(rows)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m lapr.bench.gpu_run", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--device", default="auto", help="'auto' (cuda if present), 'cuda' or 'cpu'")
    parser.add_argument("--dry", action="store_true", help="tiny shapes (smoke test)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-time budget for all shapes (s)")
    parser.add_argument("--no-model", action="store_true", help="op level only")
    parser.add_argument("--no-ops", action="store_true", help="model level only")
    parser.add_argument("--figures", default=None, help="also write the figures to this directory")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    # a later session can fill the cells an earlier one ran out of time for
    parser.add_argument("--ops-dk", default=None, help="comma list of op-level d_k (default: the grid above)")
    parser.add_argument("--ops-families", default=None, help="comma list of families: " + ",".join(ops.FAMILIES))
    parser.add_argument("--ops-phases", default=None, help="comma list: prefill,decode")
    parser.add_argument("--model-dk", default=None, help="comma list of model-level d_k")
    parser.add_argument("--model-families", default=None, help="comma list of model-level families")
    args = parser.parse_args(argv)
    with timing.torch_threads(args.threads):
        return _run(args)


def override(settings: tuple[dict, dict], args) -> tuple[dict, dict]:
    """The op and model settings with the command line's grid overrides applied (checked)."""
    ops_s, model_s = dict(settings[0]), dict(settings[1])
    for target, key, value, cast, allowed in [
            (ops_s, "d_k", args.ops_dk, int, None), (ops_s, "families", args.ops_families, str, ops.FAMILIES),
            (ops_s, "phases", args.ops_phases, str, ops.PHASES), (model_s, "d_k", args.model_dk, int, None),
            (model_s, "families", args.model_families, str, ops.FAMILIES)]:
        if value is None:
            continue
        items = [cast(x) for x in value.split(",") if x.strip()]
        bad = [x for x in items if (allowed is not None and x not in allowed) or (cast is int and x < 1)]
        if bad or not items:
            raise ValueError(f"bad value for {key}: {value!r} (allowed: {allowed or 'positive integers'})")
        target[key] = items
    return ops_s, model_s


def _run(args) -> dict:
    t0 = time.monotonic()
    device = stage.resolve_device(args.device)
    label = timing.device_label(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ops_settings, model_settings = override((DRY_OPS, DRY_MODEL) if args.dry else (OPS, MODEL), args)
    settings = {"ops": None if args.no_ops else ops_settings, "model": None if args.no_model else model_settings,
                "budget_s": args.budget_s, "dry": args.dry, "device": label, "threads": args.threads}
    facts = stage.hardware_facts(device)
    versions = provenance.versions()
    log(f"lapr gpu_run on {label}: {facts.get('device_name')} driver {facts.get('driver')}; torch "
        f"{versions['torch']} triton {versions['triton']} fla {versions['fla-core']}; budget {args.budget_s:.0f} s")

    ops_csv, model_csv = out / f"ops_{label}.csv", out / f"model_{label}.csv"

    def write_provenance(ops_rows, model_rows, complete: bool) -> dict:
        all_rows = ops_rows + model_rows
        meta = provenance.record(
            settings=settings, seed=0, device=device, bench=facts, complete=complete,
            elapsed_s=round(time.monotonic() - t0, 1), rows={"ops": len(ops_rows), "model": len(model_rows)},
            errors=sum(bool(r.get("error")) for r in all_rows),
            results=([ops_csv.name] if ops_rows else []) + ([model_csv.name] if model_rows else []),
            notes="forward only (inference_mode); the first call per shape (Triton compile + autotune) is "
                  "excluded from the statistics and reported as first_call_ms")
        provenance.write_json(out / "provenance.json", meta)
        return meta

    write_provenance([], [], complete=False)  # an interrupted run still says what it was
    ops_rows = [] if args.no_ops else run_ops(ops_settings, device, t0 + OPS_SHARE * args.budget_s, ops_csv)
    if ops_rows:
        write_rows(ops_csv, ops_rows, ops.COLUMNS)
    model_rows = [] if args.no_model else run_models(model_settings, device, t0 + args.budget_s, model_csv)
    if model_rows:
        write_rows(model_csv, model_rows, models.MODEL_COLUMNS)
    meta = write_provenance(ops_rows, model_rows, complete=True)
    if args.figures:
        from lapr.bench.plots import make_figures

        csvs = ([ops_csv] if ops_rows else []) + ([model_csv] if model_rows else [])
        try:
            log("figures: " + ", ".join(str(p) for p in make_figures(csvs, args.figures)))
        except Exception:  # noqa: BLE001 — the tables are the result; figures can be redrawn later
            log(traceback.format_exc(limit=3))
    log(f"done in {meta['elapsed_s']:.0f} s: {len(ops_rows)} op rows, {len(model_rows)} model rows, "
        f"{meta['errors']} with errors -> {out}")
    return meta


if __name__ == "__main__":
    main()
