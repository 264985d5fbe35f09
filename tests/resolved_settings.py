"""What each stage resolves from the shipped profiles' config sections, as JSON-ready dicts: the
settings every stage ran with before the typed models (tests/test_stage_settings.py compares the
models' output with tests/resolved_settings.json, recorded from the hand-validated code).

    PYTHONPATH=. python tests/resolved_settings.py > tests/resolved_settings.json
"""
import json
import sys
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.stem for p in (ROOT / "workflow/config").glob("*.yaml"))


def _sections(cfg: dict) -> dict:
    """name -> the --settings object the workflow passes (workflow/rules/common.smk), plus {} (defaults)."""
    prune, heads = cfg.get("prune", {}), cfg.get("heads", {})
    rec = {k: v for k, v in prune.get("recovery", {}).items() if k not in ("methods", "ratios", "enabled")}
    bench, mqar = cfg.get("bench", {}), cfg.get("mqar") or {}
    return {
        "profile": cfg.get("profiling") or {},
        "evaluate": cfg.get("evaluate") or {},
        "figures": cfg.get("figures") or {},
        "heads": {"lm_eval": {k: v for k, v in (cfg.get("evaluate") or {}).items()
                              if k in ("tasks", "limit", "batch_size", "max_length")},
                  **{k: v for k, v in heads.items() if k not in ("methods", "budgets")}},
        "mqar-train": mqar.get("train", {}),
        "mqar-eval": mqar.get("eval", {}),
        "bench-ops": {"mode": "ops", **bench.get("ops", {})},
        "bench-model": {"mode": "model", **bench.get("model", {})},
        "prune": {**{k: v for k, v in prune.items() if k != "recovery"}, "recovery": {**rec, "enabled": True}},
        "pretrain": cfg.get("pretrain") or {},
    }


def resolve(stage: str, raw: dict) -> dict:
    import torch

    if stage == "profile":
        from lapr.profiling.stage import parse_settings
        with warnings.catch_warnings():  # tiny's n_positions < 32: a smoke profile, warned about on purpose
            warnings.simplefilter("ignore")
            return {d: parse_settings(json.dumps(raw), torch.device(d)) for d in ("cpu", "cuda")}
    if stage == "evaluate":
        from lapr.eval.stage import resolve_settings
        return resolve_settings(raw)
    if stage == "figures":
        from lapr.report.stage import parse_settings
        return parse_settings(raw)
    if stage == "heads":
        from lapr.heads.stage import resolve_settings
        return resolve_settings(raw)
    if stage == "mqar-train":
        from lapr.probes.mqar_stage import resolve_train_settings
        return resolve_train_settings(raw)
    if stage == "mqar-eval":
        from lapr.probes.mqar_stage import resolve_eval_settings
        return resolve_eval_settings(raw)
    if stage.startswith("bench"):
        from lapr.bench.stage import parse_settings, resolve
        return {d: resolve(parse_settings(raw), torch.device(d)) for d in ("cpu", "cuda")
                if not (d == "cpu" and "fla" in raw.get("impls", []))}
    if stage == "prune":
        from lapr.pruning.stage import parse_settings
        return parse_settings(raw)
    if stage == "pretrain":
        from lapr.train import stage as pretrain
        return pretrain.parse_settings(raw)
    raise KeyError(stage)


def table() -> dict:
    out = {}
    for profile in ["defaults", *PROFILES]:
        cfg = {} if profile == "defaults" else yaml.safe_load((ROOT / f"workflow/config/{profile}.yaml").read_text())
        for stage, raw in _sections(cfg).items():
            if profile == "defaults" and stage.startswith("bench"):
                raw = {"mode": raw["mode"]}
            out[f"{profile}/{stage}"] = json.loads(json.dumps(resolve(stage, raw)))
    return out


if __name__ == "__main__":
    json.dump(table(), sys.stdout, indent=1, sort_keys=True)
    print()
