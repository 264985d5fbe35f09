"""Run the gpu profile's stages in DAG order on a machine without Snakemake (the lent H100 image).

The commands are the ones the rules run (`python -m lapr <stage> ...`) with the same config;
on a GPU machine that has Snakemake use `snakemake --profile workflow/profiles/gpu` instead.
Each step has a deadline; a step that fails or runs out of time is logged and its results are
reported missing, never faked. Results are packed into one archive after every step so that a
session cut short still brings back what it measured.

    python workflow/scripts/gpu_session.py --config workflow/config/gpu.yaml --out $OUT \
        --ratios 0.5 --budget-s 1500

Timing only (no training: random-initialised models of the config's shapes, results under
results/<name>/, never mixed with trained results):

    python workflow/scripts/gpu_session.py --steps init,profile,bench --name gpu_timing --out $OUT
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

PY = sys.executable
# a random-initialised model saved like a pretrained one; times like a trained model of its shape
INIT = """import json, sys
from lapr import provenance
from lapr.data import load_tokenizer
from lapr.models import build_model
spec, tok, seed, out = json.loads(sys.argv[1]), load_tokenizer(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
model = build_model({"vocab_size": len(tok), **spec}, seed=seed)
model.save_pretrained(out)
tok.save_pretrained(out)
provenance.write_json(out + "/provenance.json", {**provenance.record(spec, seed=seed),
                      "note": "random initialisation, not trained: for timing only"})
print(out, sum(p.numel() for p in model.parameters()), "parameters")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="workflow/config/gpu.yaml")
    ap.add_argument("--out", required=True, help="folder for the results archive and the session log")
    ap.add_argument("--ratios", default=None, help="comma list overriding prune.ratios (time)")
    ap.add_argument("--methods", default=None, help="comma list overriding prune.methods")
    ap.add_argument("--budget-s", type=float, default=1500)
    ap.add_argument("--steps", default="tokens,pretrain,profile,bench,prune,evaluate",
                    help="init = random-initialised models instead of pretrain (timing runs)")
    ap.add_argument("--name", default=None, help="results/<name> instead of the config's name")
    ap.add_argument("--bench-budget-s", type=float, default=None)
    args = ap.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    cfg["name"] = args.name or cfg["name"]
    R = Path("results") / cfg["name"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    status: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": []}

    def left() -> float:
        return args.budget_s - (time.time() - t0)

    def sh(name: str, cmd: list[str], log: Path, timeout: float) -> bool:
        log.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        if timeout < 30:
            status["steps"].append(dict(name=name, status="skipped: session time budget exhausted"))
            return False
        print(f"[{time.time() - t0:7.0f}s] {name} (timeout {timeout:.0f}s)", flush=True)
        try:
            with open(log, "w") as f:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
            state = "done" if rc == 0 else f"failed (exit {rc}, see {log})"
        except subprocess.TimeoutExpired:
            rc, state = -1, f"timed out after {timeout:.0f}s"
        status["steps"].append(dict(name=name, status=state, seconds=round(time.time() - start, 1)))
        print(f"[{time.time() - t0:7.0f}s] {name}: {state}", flush=True)
        return rc == 0

    def pack() -> None:
        (out / "session.json").write_text(json.dumps(status, indent=1))
        with tarfile.open(out / "results.tgz.tmp", "w:gz") as tar:
            for p in sorted(R.rglob("*")):
                if p.is_file() and p.suffix not in {".safetensors", ".npy", ".pt", ".bin"} \
                        and p.name != "tokenizer.json":
                    tar.add(p)
        (out / "results.tgz.tmp").replace(out / "results.tgz")

    steps = args.steps.split(",")
    corpora = cfg.get("corpora", {})
    models = {m: s for m, s in cfg["models"].items() if s["source"] == "train"}
    prune = cfg.get("prune", {})
    methods = args.methods.split(",") if args.methods else prune.get("methods", [
        "random", "l1", "l2", "wanda", "taylor", "pca", "pca_qk", "pivoted_qr", "strong_rrqr"])
    ratios = [f"{float(r):g}" for r in (args.ratios.split(",") if args.ratios else prune.get("ratios", []))]
    # prune.recovery as common.smk reads it: METHOD+lora checkpoints for recovery.methods x .ratios
    # (within this session's ratios), pruned as METHOD then fine-tuned; the stage takes the rest
    rec = prune.get("recovery", {})
    rec_ratios = {f"{float(r):g}" for r in rec.get("ratios", prune.get("ratios", []))}
    pairs = [(me, r) for me in methods for r in ratios]
    pairs += [(f"{me}+lora", r) for me in rec.get("methods", []) for r in ratios if r in rec_ratios]

    def prune_settings(method: str) -> str:
        recovery = {k: v for k, v in rec.items() if k not in ("methods", "ratios", "enabled")}
        recovery["enabled"] = bool(rec.get("enabled", False)) or method.endswith("+lora")
        return json.dumps({**{k: v for k, v in prune.items() if k != "recovery"}, "recovery": recovery})
    seed = str(cfg.get("seed", 0))
    lapr = [PY, "-m", "lapr"]
    logs = R / "logs"

    def parallel(jobs, width=None):  # (name, cmd, log, timeout) run side by side on the one GPU
        with ThreadPoolExecutor(width or len(jobs) or 1) as ex:
            return list(ex.map(lambda j: sh(*j), jobs))

    if "tokens" in steps:
        parallel([(f"tokens {c}", lapr + ["tokens", "--dataset", spec["dataset"], "--tokenizer", cfg["tokenizer"],
                                         "--settings", json.dumps({"max_chars": spec.get("max_chars")}),
                                         "--out", str(R / "data" / f"{c}.npy")], logs / f"tokens/{c}.log", 600)
                  for c, spec in corpora.items()])
    evals = [f"{c}={R / 'data' / f'{c}.npy'}" for c in corpora if c != "train"]
    if "pretrain" in steps:
        parallel([(f"pretrain {m}", lapr + ["pretrain", "--spec", json.dumps({k: v for k, v in s.items() if k != "source"}),
                                           "--settings", json.dumps(cfg.get("pretrain", {})),
                                           "--train", str(R / "data/train.npy"), "--eval", *evals,
                                           "--tokenizer", cfg["tokenizer"], "--seed", seed,
                                           "--out", str(R / "models" / m)], logs / f"pretrain/{m}.log",
                   min(left() - 60, 1200)) for m, s in models.items()])
        pack()
    if "init" in steps:
        for m, s in models.items():
            spec = json.dumps({k: v for k, v in s.items() if k != "source"})
            sh(f"init {m}", [PY, "-c", INIT, spec, cfg["tokenizer"], seed, str(R / "models" / m)],
               logs / f"init/{m}.log", 300)
    if "profile" in steps:
        for m in models:
            sh(f"profile {m}", lapr + ["profile", "--model", str(R / "models" / m), "--out", str(R / "profile" / m),
                                       "--settings", json.dumps(cfg.get("profiling", {})), "--seed", seed],
               logs / f"profile/{m}.log", min(left() - 60, 600))
        pack()
    if "bench" in steps:
        budget = args.bench_budget_s or max(60.0, min(360.0, left() * 0.35))
        sh("bench gpu_run", [PY, "-m", "lapr.bench.gpu_run", "--out", str(R / "bench"), "--budget-s", str(budget)],
           logs / "bench/gpu_run.log", budget + 120)
        pack()
    if "prune" in steps:  # four jobs at a time share the GPU
        parallel([(f"prune {m} {method} {r}", lapr + ["prune", "--model", str(R / "models" / m),
                                                      "--calib", str(R / "profile" / m / "calib.pt"),
                                                      "--method", method.split("+")[0], "--ratio", r,
                                                      "--seed", seed, "--settings", prune_settings(method),
                                                      "--out", str(R / "pruned" / m / method / r)],
                   logs / f"prune/{m}/{method}/{r}.log", min(left() - 30, 300))
                  for m in models for method, r in pairs], width=4)
        pack()
    if "evaluate" in steps:
        jobs = [(m, "none", "0", R / "models" / m) for m in models]
        jobs += [(m, me, r, R / "pruned" / m / me / r) for m in models for me, r in pairs]
        todo = []
        for m, me, r, path in jobs:
            if not path.exists():
                status["steps"].append(dict(name=f"evaluate {m} {me} {r}", status="skipped: no checkpoint"))
                continue
            todo.append((f"evaluate {m} {me} {r}", lapr + ["evaluate", "--model", str(path), "--model-name", m,
                                                         "--method", me, "--ratio", r, "--seed", seed,
                                                         "--settings", json.dumps(cfg.get("evaluate", {})),
                                                         "--out", str(R / "eval" / m / me / f"{r}.csv")],
                         logs / f"evaluate/{m}/{me}/{r}.log", min(left() - 20, 400)))
        parallel(todo, width=4)
    status["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    pack()
    print("session done", flush=True)


if __name__ == "__main__":
    main()
