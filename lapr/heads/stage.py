"""`heads` stage: remove one or more budgets of heads from one LM by one method; perplexity, NIAH and state saved.

    python -m lapr heads --model results/embedded/models/gdn \\
        --heads-csv results/embedded/profile/gdn/heads.csv --method joint_rank_norm \\
        --budget 0.25 0.5 0.75 \\
        --out results/embedded/heads/gdn/joint_rank_norm/0.25.csv \\
              results/embedded/heads/gdn/joint_rank_norm/0.5.csv \\
              results/embedded/heads/gdn/joint_rank_norm/0.75.csv \\
        --settings '{"alpha": 0.5, "scope": "global", "eval": {"ppl": ["gutenberg_valid"]}}'

`--budget` and `--out` take one or more values, paired in order (same count). The checkpoint,
tokenizer and heads table are loaded once, every budget is validated and planned before anything
is evaluated or written, then each budget is applied to the unmodified model (structural removal
builds a new model; masking hooks are removed after each budget), evaluated and written: the
files of each budget are exactly those of a run with that budget alone (timings aside). The
evaluation inputs (perplexity token streams, NIAH samples) do not depend on the budget and are
built once.

`--method none --budget 0` evaluates the unpruned model (the baseline row of every curve); with
`--arms-out FILE` the same job also evaluates paper B's disjoint low / high / random arms
(lapr.heads.methods.disjoint_arms) into FILE, on the same NIAH samples as the unpruned rows (the
unpruned NIAH then runs max(niah.n, arms.niah_n) samples per cell; sample i of a cell does not
depend on n, so the pruned methods' fewer samples are a subset of these).

Paper B's B3 protocol: for the alpha-dependent methods (joint_rank_norm) the budget equal to
settings.b3_budget (38.9%: paper B's abstract and sec. 5.3 report a 38.9% state / KV reduction) is
evaluated at every alpha of settings.alphas (rows carry `alpha`; the claims read alpha ==
settings.alpha), head sets met twice are evaluated once; at settings.alpha it also runs the
evaluate stage's lm-eval tasks (settings.lm_eval, lapr.eval.stage.evaluate_model), rows with
task/metric as the eval stage writes them (acc as fractions), `n` = documents, `stderr`.

Rows (LAYOUT.md heads format, plus descriptive columns):
  model, method, budget, task, metric, value, state_bytes, state_bytes_full, state_saved_frac,
  application ('structural' | 'masked' | 'none'), context_len, depth, n, heads_removed,
  removed_low, removed_high, scope, alpha, norm, status, draw, stderr
- task `ppl/<corpus>`: metrics ppl, nll (lapr.eval.perplexity.token_perplexity over the first
  eval.max_tokens tokens in windows of eval.seq_len; n = windows);
- task `niah`: per (context_len, depth) cell metrics accuracy (greedy passkey), token_accuracy,
  answer_logprob (n = samples); and over all cells accuracy_mean, token_accuracy_mean.
- arms file (--arms-out): methods arm_low, arm_high, arm_random (one per random draw: `draw`
  0..draws-1), each removing k = min(#low class, #high class) heads (heads_removed = k, budget =
  k / heads); tasks ppl/<arms.ppl> and niah as above. When either class is empty no arm can be
  formed: one row per arm with task 'arms', metric 'k', value 0 and status 'unformable: ...'.
`status` is 'ok' on every measured row. `norm` is settings.norm ('frobenius' | 'nuclear').
state_bytes are bytes per sequence of the recurrent states after removal (lapr.heads.apply).
Beside each CSV: `<stem>.provenance.json` (settings, the head plan with every head's scores, the
state accounting, timings, the budgets of the batch) and `<stem>.niah.csv` (one row per NIAH sample, with the continuation).

Settings (--settings JSON): the Heads model below, its defaults and checks (eval, niah, arms and
lm_eval are nested models; null turns niah, arms and lm_eval off and eval's perplexity).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from lapr import columns
from lapr.eval.stage import CORPUS_NAMES, DEVICES, DTYPES, Evaluate, canonical_corpus
from lapr.eval.stage import resolve_settings as eval_settings
from lapr.heads.apply import APPLICATIONS
from lapr.heads.methods import NORM_COLUMNS, SCOPES
from lapr.probes.niah import Niah
from lapr.settings import Settings, SettingsError, setting, subset

COLUMNS = columns.HEAD_PRUNING  # shared with the report (lapr/columns.py)
LM_EVAL_KEYS = ("tasks", "limit", "batch_size", "max_length")
CORPORA = dict(choices=CORPUS_NAMES, items=dict(choices=CORPUS_NAMES))  # a corpus or a list of them


@dataclass
class Arms(Settings):
    """Paper B's disjoint low / high / random arms (the config's `heads.arms`), written by the
    unpruned job to --arms-out."""

    SECTION = "heads.arms"
    group_low: float = setting(0.25, "heads with final rank / bound <= group_low are the low class", above=0, high=1)
    group_high: float = setting(0.75, "heads with final rank / bound >= group_high are the high class", above=0,
                                high=1)
    draws: int = setting(3, "random arms drawn", low=1)
    niah_n: int = setting(8, "NIAH samples per cell of each arm", low=1)
    ppl: str | list[str] | None = setting(["gutenberg_valid"], "perplexity corpora of each arm", **CORPORA)

    def check(self, where: str) -> None:
        if self.group_low > self.group_high:  # the classes would overlap, and the arms with them
            raise SettingsError(f"{where}.group_low", f"{self.group_low} must be <= group_high ({self.group_high})")


@dataclass
class HeadsEval(Settings):
    """Perplexity of every head-pruned model (the config's `heads.eval`)."""

    SECTION = "heads.eval"
    ppl: str | list[str] | None = setting(["gutenberg_valid", "wikitext2_test_raw"], "corpora ([]: none)", **CORPORA)
    max_tokens: int | None = setting(16384, "first tokens of each corpus (>= seq_len; null: all)", low=1)
    seq_len: int = setting(256, "window length", low=2)
    batch_size: int = setting(8, low=1)

    def check(self, where: str) -> None:
        if self.max_tokens is not None and self.max_tokens < self.seq_len:
            raise SettingsError(f"{where}.max_tokens", f"{self.max_tokens} is below seq_len ({self.seq_len})")


LmEval = subset(Evaluate, LM_EVAL_KEYS, "LmEval", "heads.lm_eval",
                "The evaluate stage's lm-eval settings run at b3_budget by joint_rank_norm (the config's "
                "`heads.lm_eval`; the workflow fills in `evaluate`'s).")


@dataclass
class Heads(Settings):
    """Settings of `lapr heads` (the config's `heads` section, less the workflow's grid: `methods`,
    `budgets`)."""

    SECTION = "heads"
    alpha: float = setting(0.5, "weight of the normalised rank in joint_rank_norm (eq. 14); the claims' alpha",
                           low=0, high=1)
    alphas: list[float] = setting([0.0, 0.25, 0.5, 0.75, 1.0], "alphas joint_rank_norm sweeps at b3_budget "
                                  "(alpha is unpublished; alpha is always among them)", min_items=1,
                                  items=dict(low=0, high=1))
    b3_budget: float = setting(0.389, "budget of the alpha sweep and of the lm-eval tasks (paper B's 38.9%)",
                               above=0, below=1)
    norm: str = setting("frobenius", "nbar of eq. 14: heads.csv state_norm (frobenius) or state_nuclear",
                        choices=tuple(NORM_COLUMNS))
    lm_eval: LmEval | None = setting(None, "lm-eval tasks at b3_budget and alpha (null: none)")
    arms: Arms | None = setting(Arms(), "null: no arms")
    scope: str = setting("global", "budget over all heads or per layer", choices=SCOPES)
    seed: int = setting(0, "tie-break / random-method seed, and NIAH sample seed; --seed overrides it", low=0)
    min_keep: int = setting(0, "heads that must stay in every layer", low=0)
    application: str = setting("auto", "auto (structural when fla allows, else masked) | masked | structural",
                               choices=APPLICATIONS)
    state_dtype: str = setting("float32", "dtype of the accounted states (fla keeps them in float32)",
                               choices=("float32", "float64", "bfloat16", "float16"))
    device: str | None = setting(None, "as in the evaluate stage", choices=DEVICES)
    dtype: str | None = setting(None, "as in the evaluate stage", choices=tuple(DTYPES))
    tokenizer: str | None = setting(None, "null: the checkpoint's own")
    eval: HeadsEval | None = setting(HeadsEval(), "null: no perplexity")
    niah: Niah | None = setting(Niah(), "null: no NIAH")


def _corpora(value) -> list[str]:
    """A corpus or a list of them (or null) as a list of canonical names."""
    return [canonical_corpus(c) for c in ([value] if isinstance(value, str) else value or [])]


def resolve_settings(raw) -> dict:
    """--settings (JSON string or dict) checked by Heads, with the alphas swept, lm_eval resolved as
    the evaluate stage does and corpus aliases mapped (SettingsError names the key)."""
    s = Heads.parse(raw or {}).as_dict()
    s["alpha"], s["b3_budget"] = float(s["alpha"]), float(s["b3_budget"])
    s["alphas"] = sorted({float(a) for a in s["alphas"]} | {s["alpha"]})
    if s["lm_eval"] is not None:
        resolved = eval_settings(s["lm_eval"], where="heads.lm_eval")
        s["lm_eval"] = {k: resolved[k] for k in LM_EVAL_KEYS}
    if s["arms"] is not None:
        s["arms"]["group_low"], s["arms"]["group_high"] = float(s["arms"]["group_low"]), float(s["arms"]["group_high"])
        s["arms"]["ppl"] = _corpora(s["arms"]["ppl"])
    s["eval"] = s["eval"] or {**HeadsEval.defaults(), "ppl": []}
    s["eval"]["ppl"] = _corpora(s["eval"]["ppl"])
    return s


def check_method_budget(method: str, budget) -> float:
    from lapr.heads import methods

    if method == "none":
        if budget not in (0, 0.0):
            raise ValueError(f"--method none is the unpruned baseline and needs --budget 0, got {budget}")
        return 0.0
    methods.check_method(method)
    return methods.check_budget(budget)


def model_heads(model) -> pd.DataFrame:
    """A placeholder heads table (every head, no scores): enough for 'random' and 'none'."""
    from lapr.models import family

    rows = [{"layer": v.index, "head": h, "final_rank": 0.0, "bound": 1, "state_norm": 0.0}
            for v in family(model).attention(model) for h in range(v.num_v_heads)]
    return pd.DataFrame(rows)


def check_heads_match(table: pd.DataFrame, model, where: str, T: int | None = None) -> None:
    """The table's (layer, head) pairs are the model's, and its rank bounds fit the model's state
    (bound = min(T, d_k, d_v): a larger bound, or another one when T is known, means another d_k)."""
    from lapr.models import family

    want = set(map(tuple, model_heads(model)[["layer", "head"]].to_numpy().tolist()))
    have = set(map(tuple, table[["layer", "head"]].astype(int).to_numpy().tolist()))
    if want != have:
        raise ValueError(f"{where}: heads {sorted(have ^ want)[:6]}... do not match the model's "
                         f"{len(want)} (layer, value head) pairs: a heads.csv of another model?")
    dims = {v.index: (v.head_k_dim, v.head_v_dim) for v in family(model).attention(model)}
    for layer, bound in table.groupby("layer")["bound"].max().items():
        d_k, d_v = dims[int(layer)]
        top = min(d_k, d_v) if T is None else min(int(T), d_k, d_v)
        if bound > top or (T is not None and bound != top):
            raise ValueError(f"{where}: layer {layer} has rank bound {bound:g}, but this model's states "
                             f"(d_k {d_k}, d_v {d_v}{'' if T is None else f', T {T}'}) bound it at {top}: "
                             f"a heads.csv of a model with another d_k?")


def profile_record(heads_csv) -> dict:
    """The profiling stage's provenance.json beside a heads.csv ({} if there is none)."""
    path = Path(heads_csv).with_name("provenance.json")
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} (the provenance of --heads-csv {heads_csv}) is not JSON: {e}") from None
    return record if isinstance(record, dict) and record.get("stage") == "profile" else {}


def evaluate(model, tokenizer, settings: dict, log=print,
             inputs: dict | None = None) -> tuple[list[dict], pd.DataFrame | None, dict]:
    """ppl + NIAH rows (task, metric, value, context_len, depth, n) of one (pruned) model.

    `inputs`: a dict shared by the evaluations of several models with the same tokenizer and
    settings (one per budget); the token streams and NIAH samples, which depend on neither the
    model nor the budget, are built on the first call and reused from it after.
    """
    from lapr.eval.perplexity import token_perplexity
    from lapr.eval.stage import corpus_tokens
    from lapr.probes import niah

    inputs = {} if inputs is None else inputs
    rows, seconds = [], {}
    ev = settings["eval"]
    for name in ev["ppl"]:
        t0 = time.perf_counter()
        if ("ppl", name) not in inputs:
            inputs[("ppl", name)] = corpus_tokens(name, tokenizer, ev["max_tokens"])
        tokens = inputs[("ppl", name)]
        with torch.inference_mode():
            res = token_perplexity(model, tokens, ev["seq_len"], batch_size=ev["batch_size"])
        for metric in ("ppl", "nll"):
            rows.append({"task": f"ppl/{name}", "metric": metric, "value": res[metric], "n": res["windows"]})
        seconds[f"ppl/{name}"] = time.perf_counter() - t0
        log(f"[heads] ppl/{name}: {res['ppl']:.4g} ({seconds[f'ppl/{name}']:.1f} s)", flush=True)
    samples = None
    if settings["niah"] is not None:
        nh = settings["niah"]
        t0 = time.perf_counter()
        if "niah" not in inputs:
            filler = niah.filler_tokens(tokenizer, nh["corpus"], nh["max_chars"])
            inputs["niah"] = niah.make_samples(tokenizer, filler, nh["lengths"], nh["depths"], nh["n"],
                                               settings["seed"], nh["digits"])
        samples = niah.evaluate(model, tokenizer, inputs["niah"], batch_size=nh["batch_size"])
        cells = niah.cell_table(samples)
        for c in cells.itertuples():
            for metric in ("accuracy", "token_accuracy", "answer_logprob"):
                rows.append({"task": "niah", "metric": metric, "value": float(getattr(c, metric)),
                             "context_len": int(c.context_len), "depth": float(c.depth), "n": int(c.n)})
        rows.append({"task": "niah", "metric": "accuracy_mean", "value": float(samples["correct"].mean()),
                     "n": len(samples)})
        rows.append({"task": "niah", "metric": "token_accuracy_mean",
                     "value": float(samples["token_accuracy"].mean()), "n": len(samples)})
        seconds["niah"] = time.perf_counter() - t0
        log(f"[heads] niah: accuracy {samples['correct'].mean():.3f}, token accuracy "
            f"{samples['token_accuracy'].mean():.3f} over {len(samples)} samples ({seconds['niah']:.1f} s)", flush=True)
    return rows, samples, seconds


def lm_eval_rows(model, tokenizer, settings: dict, log=print) -> list[dict]:
    """The evaluate stage's lm-eval rows (its own harness call, lapr.eval.stage.evaluate_model, with
    settings.lm_eval and no perplexity) as heads rows: task, metric, value, stderr, n (documents)."""
    from lapr.eval.stage import evaluate_model, resolve_settings as eval_settings

    ev = eval_settings({**settings["lm_eval"], "perplexity": None, "unigram": False,
                        "device": settings["device"], "dtype": settings["dtype"]})
    df, _, _ = evaluate_model(model, tokenizer, ev, unigram=False, seed=settings["seed"], log=log)
    return [{"task": r.task, "metric": r.metric, "value": float(r.value), "stderr": float(r.stderr),
             "n": r.n_docs} for r in df.itertuples(index=False)]


def plan_budget(model, table: pd.DataFrame | None, method: str, budget: float, settings: dict,
                alpha: float | None = None) -> dict:
    """The heads `method` removes at `budget`, how (structural / masked / none) and the state saved.

    Touches no weights and evaluates nothing, so every budget of a batch is planned (and any that
    is impossible, e.g. application 'structural' with uneven layers, rejected) before the first is
    evaluated.
    """
    from lapr.heads import apply, methods

    dtype = getattr(torch, settings["state_dtype"])
    alpha = settings["alpha"] if alpha is None else alpha
    if method == "none":
        plan, removed, how, why = None, [], "none", None
    else:
        table = model_heads(model) if table is None else table
        plan = methods.select_heads(table, method, budget, settings["scope"], alpha,
                                    settings["seed"], settings["min_keep"], settings["norm"])
        removed = plan.removed
        how, why = apply.plan_application(model, removed, settings["application"])
    return {"method": method, "budget": float(budget), "alpha": alpha, "plan": plan, "removed": removed,
            "application": how,
            "why": why, "state": apply.state_accounting(model, removed, dtype)}


def evaluate_plan(model, tokenizer, planned: dict, settings: dict, log=print, inputs: dict | None = None,
                  lm_eval: bool = False) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """Apply a `plan_budget` result and evaluate; returns (rows without the model column, NIAH samples, info).

    `model` is left as it was: structural removal evaluates a new model (apply.remove_heads copies
    the weights it keeps), masking evaluates `model` under hooks that are removed on exit.
    """
    from lapr.heads import apply

    method, budget, removed, how = planned["method"], planned["budget"], planned["removed"], planned["application"]
    plan, acc = planned["plan"], planned["state"]
    log(f"[heads] {method} @ {budget}: removing {len(removed)} heads {removed} ({how}); state "
        f"{acc['state_bytes']} / {acc['state_bytes_full']} bytes per sequence "
        f"({100 * acc['state_saved_frac']:.1f}% saved)", flush=True)
    def run_all(m):
        rows, samples, seconds = evaluate(m, tokenizer, settings, log, inputs)
        if lm_eval:
            t0 = time.perf_counter()
            rows += lm_eval_rows(m, tokenizer, settings, log)
            seconds["lm_eval"] = time.perf_counter() - t0
        return rows, samples, seconds

    if how == "structural":
        target = apply.remove_heads(model, removed)
        rows, samples, seconds = run_all(target)
        del target
    elif how == "masked":
        with apply.masked(model, removed):
            rows, samples, seconds = run_all(model)
    else:
        rows, samples, seconds = run_all(model)
    summary = plan.summary() if plan is not None else {"n_removed": 0}
    df = pd.DataFrame(rows)
    df["method"], df["budget"] = method, float(budget)
    df["state_bytes"], df["state_bytes_full"] = acc["state_bytes"], acc["state_bytes_full"]
    df["state_saved_frac"], df["application"] = acc["state_saved_frac"], how
    df["heads_removed"] = len(removed)
    df["removed_low"] = summary.get("removed_low", math.nan)
    df["removed_high"] = summary.get("removed_high", math.nan)
    df["scope"], df["alpha"], df["norm"] = settings["scope"], planned.get("alpha", settings["alpha"]), settings["norm"]
    df["status"] = "ok"
    info = {"plan": summary, "scores": plan.scores.to_dict("records") if plan is not None else [],
            "application": how, "structural_blocked_by": planned["why"], "state": acc, "seconds": seconds}
    return df, samples, info


def prune_and_evaluate(model, tokenizer, table: pd.DataFrame | None, method: str, budget: float,
                       settings: dict, log=print,
                       inputs: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """Plan, apply, evaluate one budget; returns (rows without the model column, NIAH samples, info)."""
    return evaluate_plan(model, tokenizer, plan_budget(model, table, method, budget, settings), settings, log,
                         inputs)


def is_b3(budget: float, settings: dict) -> bool:
    """budget is settings.b3_budget (compared as file names: 0.389 and 0.38900000001 are one budget)."""
    from lapr.grid import ratio_name

    return ratio_name(budget) == ratio_name(settings["b3_budget"])


def lm_tasks(df: pd.DataFrame) -> set:
    """Tasks of rows that are neither ppl/<corpus> nor niah: the lm-eval rows."""
    return {t for t in df["task"].unique() if not str(t).startswith("ppl/") and t != "niah"}


def arms_niah(settings: dict) -> dict:
    """settings with niah.n raised to arms.niah_n (unpruned and arms rows then share their samples)."""
    if settings["niah"] is None or settings["arms"] is None:
        return settings
    out = copy.deepcopy(settings)
    out["niah"]["n"] = max(out["niah"]["n"], out["arms"]["niah_n"])
    return out


def evaluate_arms(model, tokenizer, arms, settings: dict, inputs: dict,
                  log=print) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """Rows (without `model`) of every disjoint arm (lapr.heads.methods.disjoint_arms), or, when the
    arms cannot be formed, one row per arm saying so (status 'unformable: ...')."""
    from lapr.heads import apply

    dtype = getattr(torch, settings["state_dtype"])
    ev = {**settings, "eval": {**settings["eval"], "ppl": settings["arms"]["ppl"]}}
    info = {"arms": arms.summary(), "seconds": {}, "plans": {}}
    if arms.k == 0:
        log(f"[heads] arms cannot be formed: {arms.status}", flush=True)
        df = pd.DataFrame([{"method": m, "budget": 0.0, "task": "arms", "metric": "k", "value": 0.0,
                            "heads_removed": 0, "status": arms.status} for m in ("arm_low", "arm_high", "arm_random")])
        df["scope"], df["alpha"], df["norm"] = settings["scope"], math.nan, settings["norm"]
        return df, None, info
    runs = [("arm_low", math.nan, arms.low), ("arm_high", math.nan, arms.high)]
    runs += [("arm_random", d, heads) for d, heads in enumerate(arms.random)]
    frames, niah = [], []
    for method, draw, removed in runs:
        how, why = apply.plan_application(model, removed, settings["application"])
        planned = {"method": method, "budget": arms.k / arms.n_heads, "alpha": math.nan, "plan": None,
                   "removed": removed, "application": how, "why": why,
                   "state": apply.state_accounting(model, removed, dtype)}
        t0 = time.perf_counter()
        df, samples, one = evaluate_plan(model, tokenizer, planned, ev, log, inputs)
        df["draw"] = draw
        # removed heads of the arms' classes (rank/bound < group_low, >= group_high)
        df["removed_low"] = len(set(removed) & set(arms.low_class))
        df["removed_high"] = len(set(removed) & set(arms.high_class))
        frames.append(df)
        if samples is not None:
            niah.append(samples.assign(method=method, draw=draw))
        key = method if math.isnan(draw) else f"{method}/{draw}"
        info["plans"][key] = {"removed": [list(h) for h in removed], "application": how,
                              "structural_blocked_by": why, "state": planned["state"]}
        info["seconds"][key] = time.perf_counter() - t0
    return pd.concat(frames, ignore_index=True), (pd.concat(niah, ignore_index=True) if niah else None), info


def sidecars(out: Path) -> tuple[Path, Path]:
    """(provenance JSON, per-sample NIAH CSV) written beside `out`."""
    return out.with_name(out.stem + ".provenance.json"), out.with_name(out.stem + ".niah.csv")


def check_budgets_outs(method: str, budgets, outs) -> list[tuple[float, Path]]:
    """Pair --budget with --out (same count, every budget valid for method, no file written twice)."""
    budgets = list(budgets) if isinstance(budgets, (list, tuple)) else [budgets]
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    if not budgets:
        raise ValueError("--budget: give at least one budget")
    if len(budgets) != len(outs):
        raise ValueError(f"--budget has {len(budgets)} value(s) but --out has {len(outs)}: give one --out per "
                         f"budget, in the same order")
    checked = [check_method_budget(method, b) for b in budgets]
    outs = [Path(o) for o in outs]
    seen: dict[Path, Path] = {}
    for out in outs:
        for path in (out, *sidecars(out)):
            key = path.resolve()
            if key in seen:
                raise ValueError(f"--out {out}: writes {path}, which --out {seen[key]} also writes "
                                 f"(duplicate --out?)")
            seen[key] = out
    return list(zip(checked, outs))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument("--heads-csv", default=None, help="profiling heads.csv (needed by every method but "
                        "random / none)")
    parser.add_argument("--method", required=True, help="joint_rank_norm | low_rank_first | high_rank_first | "
                        "norm_only | random | none (unpruned)")
    parser.add_argument("--budget", type=float, nargs="+", required=True,
                        help="fraction(s) of heads removed (0 with none); one per --out")
    parser.add_argument("--out", nargs="+", required=True, help="tidy CSV(s) to write, one per --budget, in order")
    parser.add_argument("--model-name", default=None, help="value of the `model` column (default: --model's name)")
    parser.add_argument("--settings", default="{}", help="JSON object; keys: " + ", ".join(Heads.keys()))
    parser.add_argument("--seed", type=int, default=None, help="overrides settings.seed")
    parser.add_argument("--arms-out", default=None, help="with --method none: also evaluate the disjoint "
                        "low / high / random arms (settings.arms) into this CSV")


def run(args: argparse.Namespace) -> None:
    from lapr import paths, provenance
    from lapr.eval.stage import check_values, load_checkpoint
    from lapr.heads import methods
    from lapr.models.weights import check_source

    settings = resolve_settings(args.settings)
    if args.seed is not None:
        settings["seed"] = int(args.seed)
    jobs = check_budgets_outs(args.method, args.budget, args.out)
    if args.arms_out:
        if args.method != "none" or settings["arms"] is None or not args.heads_csv:
            raise ValueError("--arms-out needs --method none, --heads-csv and settings.arms (not null)")
        if Path(args.arms_out).resolve() in {p.resolve() for _, out in jobs for p in (out, *sidecars(out))}:
            raise ValueError(f"--arms-out {args.arms_out} is also an --out file")
    outs = [p for _, out in jobs for p in (out, *sidecars(out))]
    outs += [p for p in (Path(args.arms_out), *sidecars(Path(args.arms_out)))] if args.arms_out else []
    paths.check_outputs({"--out": outs},
                        {"--model": args.model, "--heads-csv": args.heads_csv,
                         "settings.tokenizer": paths.local(settings["tokenizer"])})
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: no Hugging Face checkpoint there (config.json missing)")
    table, profile = None, {}
    if args.heads_csv:
        table = methods.load_heads(args.heads_csv)
        profile = profile_record(args.heads_csv)
        check_source(profile.get("model"), profile.get("weights_fingerprint"), model_dir,
                     f"--heads-csv {args.heads_csv}")
    elif args.method not in ("random", "none"):
        raise ValueError(f"--method {args.method} ranks heads by their profile: pass --heads-csv (heads.csv)")
    start = time.perf_counter()
    model, tokenizer = load_checkpoint(model_dir, {"device": settings["device"], "dtype": settings["dtype"],
                                                   "tokenizer": settings["tokenizer"]})
    if table is not None:
        check_heads_match(table, model, f"--heads-csv {args.heads_csv}",
                          (profile.get("settings") or {}).get("T"))
    name = args.model_name or model_dir.name
    device = next(model.parameters()).device
    sweep = [a for a in settings["alphas"]] if args.method in methods.ALPHA_METHODS else [settings["alpha"]]
    plans = [[plan_budget(model, table, args.method, budget, settings, a)
              for a in (sweep if is_b3(budget, settings) else [settings["alpha"]])] for budget, _ in jobs]
    arms = None
    if args.arms_out:
        arms = methods.disjoint_arms(table, **{k: settings["arms"][k] for k in ("group_low", "group_high", "draws")},
                                     seed=settings["seed"])
        print(f"[heads] arms: {arms.n_low_class} low-class, {arms.n_high_class} high-class of {arms.n_heads} "
              f"heads -> k = {arms.k} ({arms.status})", flush=True)
        settings = arms_niah(settings)  # the unpruned rows share the arms' NIAH samples
    load_s = time.perf_counter() - start
    budgets = [budget for budget, _ in jobs]
    inputs: dict = {}
    for i, ((budget, out), planned) in enumerate(zip(jobs, plans)):
        if len(jobs) > 1:
            print(f"[heads] budget {i + 1}/{len(jobs)}: {args.method} @ {budget} -> {out}", flush=True)
        t0 = time.perf_counter()
        frames, niah_frames, infos, done = [], [], {}, {}
        for p in planned:
            # at settings.alpha (the claims' alpha) the lm-eval tasks run too, so never reuse a copy there
            lm = settings["lm_eval"] is not None and is_b3(budget, settings) and p["alpha"] == settings["alpha"] \
                and args.method in methods.ALPHA_METHODS
            key = (frozenset(p["removed"]), p["application"])
            if key in done and not lm:  # same heads removed at another alpha: same model, same rows
                df, samples, info = done[key]
                print(f"[heads] alpha {p['alpha']:g}: same {len(p['removed'])} heads as alpha "
                      f"{df['alpha'].iloc[0]:g}, rows reused", flush=True)
                df = df[~df["task"].isin(lm_tasks(df))].assign(alpha=p["alpha"])
                info = {**info, "plan": p["plan"].summary(), "reused_from_alpha": float(done[key][0]["alpha"].iloc[0])}
            else:
                df, samples, info = evaluate_plan(model, tokenizer, p, settings, inputs=inputs, lm_eval=lm)
                done.setdefault(key, (df, samples, info))
            frames.append(df)
            if samples is not None:
                niah_frames.append(samples.assign(alpha=p["alpha"]))
            infos[f"{p['alpha']:g}"] = info
        df = pd.concat(frames, ignore_index=True)
        df.insert(0, "model", name)
        df = df.reindex(columns=COLUMNS)
        check_values(df, f"{model_dir} ({args.method} @ {budget})")
        info = dict(infos[f"{settings['alpha']:g}"])
        info["seconds"] = {**info["seconds"], "load": load_s, "total": load_s + time.perf_counter() - t0}
        if len(planned) > 1:
            info["alphas"] = infos
        prov, niah_csv = sidecars(out)
        provenance.write_json(prov, provenance.record(
            settings, settings["seed"], device, stage="heads", model_dir=str(model_dir), model=name,
            method=args.method, budget=budget, heads_csv=args.heads_csv, batch_budgets=budgets, **info))
        if niah_frames:
            provenance.write_table(niah_csv, pd.concat(niah_frames, ignore_index=True))
        provenance.write_table(out, df)
        print(f"[heads] wrote {len(df)} rows to {out} in {info['seconds']['total']:.1f} s "
              f"({i + 1}/{len(jobs)} budgets, {time.perf_counter() - start:.1f} s so far)", flush=True)
    if arms is not None:
        t0 = time.perf_counter()
        df, samples, info = evaluate_arms(model, tokenizer, arms, settings, inputs)
        df.insert(0, "model", name)
        df = df.reindex(columns=COLUMNS)
        check_values(df, f"{model_dir} (arms)")
        info["seconds"]["load"] = load_s
        info["seconds"]["total"] = load_s + time.perf_counter() - t0
        prov, niah_csv = sidecars(Path(args.arms_out))
        provenance.write_json(prov, provenance.record(
            settings, settings["seed"], device, stage="heads", model_dir=str(model_dir), model=name,
            method="arms", heads_csv=args.heads_csv, **info))
        if samples is not None:
            provenance.write_table(niah_csv, samples)
        provenance.write_table(args.arms_out, df)
        print(f"[heads] wrote {len(df)} arm rows to {args.arms_out} in {info['seconds']['total']:.1f} s", flush=True)


__all__ = ["COLUMNS", "Heads", "add_arguments", "check_budgets_outs", "check_method_budget", "evaluate",
           "evaluate_plan", "model_heads", "plan_budget", "prune_and_evaluate", "resolve_settings", "run",
           "sidecars"]
