"""Run lm-eval on an in-memory model and return tidy results.

`evaluate` wraps a `transformers` causal LM (any module whose forward returns
`.logits`) in lm-eval's `HFLM`, loads tasks through a `TaskManager` that knows the
offline `lapr_*` tasks in `lapr/eval/tasks/` (stock lm-eval task names work too,
but those download their data from the Hugging Face hub), and flattens
`lm_eval.simple_evaluate`'s results into one row per (task, metric).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
LOCAL_PREFIX = "lapr_"
# Paper A's zero-shot suite, offline.
PAPER_A_TASKS = ("lapr_wikitext", "lapr_lambada_openai", "lapr_piqa", "lapr_hellaswag",
                 "lapr_winogrande", "lapr_arc_easy", "lapr_arc_challenge")
ALIASES = {"paper_a": PAPER_A_TASKS}
COLUMNS = ["task", "metric", "value", "stderr", "n_docs", "limit"]
# lm-eval aggregation of a metric's per-document values -> (sign of `value`, transform of
# m = sum(value) / sum(weight)) that reproduces it (lm_eval/api/metrics.py, 0.4.13): mean ->
# mean(x); perplexity -> exp(-mean(ll)); weighted_perplexity -> exp(-sum(ll) / sum(n)) over
# (ll, n) pairs; bits_per_byte -> -sum(ll) / sum(n) / ln 2; weighted_mean -> sum(a) / sum(b).
# Per-unit values of perplexity-type metrics are stored as NLL (-ll), so every perplexity in the
# samples sidecar reads exp(m) (lapr.columns.SAMPLES). Other aggregations (f1, bleu, ...) are not
# means over documents and get no per-unit rows.
UNIT_AGGREGATIONS = {"mean": (1.0, "mean"), "weighted_mean": (1.0, "mean"), "perplexity": (-1.0, "exp"),
                     "weighted_perplexity": (-1.0, "exp"), "bits_per_byte": (-1.0, "bits")}


def task_names(tasks: str | Sequence[str]) -> list[str]:
    """Comma-separated string or list -> task names, with `paper_a` expanded, order kept."""
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names: list[str] = []
    for item in (t.strip() for t in items):
        for name in ALIASES.get(item, (item,)):
            if name and name not in names:
                names.append(name)
    if not names:
        raise ValueError("no tasks given")
    return names


def local_tasks() -> set[str]:
    """Names of the offline tasks defined by the YAMLs in TASKS_DIR."""
    import yaml

    names = set()
    for path in TASKS_DIR.rglob("*.yaml"):
        # the YAMLs use the !function tag; only the plain `task:` key is wanted here
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("task:"):
                names.add(yaml.safe_load(line)["task"])
    return names


def task_manager(names: Sequence[str]):
    """TaskManager with our tasks; lm-eval's own ~15k are indexed (slowly) only if asked for."""
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=str(TASKS_DIR),
                       include_defaults=any(not n.startswith(LOCAL_PREFIX) for n in names))


def _number(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):  # lm-eval writes "N/A" when it has no stderr
        return math.nan


def tidy(results: dict, limit: int | float | None) -> pd.DataFrame:
    """`simple_evaluate` output -> rows (task, metric, value, stderr, n_docs, limit)."""
    rows = []
    n_samples = results.get("n-samples", {})
    for task, metrics in results["results"].items():
        n_docs = n_samples.get(task, {}).get("effective", math.nan)
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if not filt or "_stderr" in name:
                continue  # "alias", "samples" and the stderr entries themselves
            metric = name if filt == "none" else f"{name},{filt}"
            rows.append({"task": task, "metric": metric, "value": _number(value),
                         "stderr": _number(metrics.get(f"{name}_stderr,{filt}")),
                         "n_docs": n_docs, "limit": limit})
    return pd.DataFrame(rows, columns=COLUMNS)


def _aggregation(config: dict, metric: str) -> str | None:
    """Name of the aggregation lm-eval applies to `metric` of a task: the task config's, else the
    metric's registered default (as ConfigurableTask does)."""
    from lm_eval.api import registry

    for item in (config or {}).get("metric_list") or []:
        if item.get("metric") == metric and isinstance(item.get("aggregation"), str):
            return item["aggregation"]
    try:
        fn = registry.get_metric_aggregation(metric)
    except (KeyError, ValueError):
        return None
    return next((k for k, v in registry.AGGREGATION_REGISTRY.items() if v is fn), None)


def units(results: dict) -> pd.DataFrame:
    """Per-document values of `simple_evaluate(..., log_samples=True)` -> rows task, metric, unit,
    value, weight (lapr.columns.SAMPLES): unit = lm-eval's doc_id; for each metric whose aggregation
    is a (weighted) mean or a perplexity (UNIT_AGGREGATIONS) value/weight are such that
    SAMPLE_TRANSFORM[metric](sum(value) / sum(weight)) is lm-eval's aggregate, e.g. acc: 0/1 and 1;
    word_perplexity: -loglikelihood (nats) and the page's word count."""
    from lapr.columns import SAMPLE_TRANSFORM, SAMPLES

    rows = []
    for task, examples in (results.get("samples") or {}).items():
        config = results.get("configs", {}).get(task, {})
        plan = {}
        for ex in examples:
            filt = ex.get("filter", "none")
            for name in ex.get("metrics", []):
                if name not in plan:
                    agg = UNIT_AGGREGATIONS.get(_aggregation(config, name))
                    # the reader knows a metric's transform by its name only: write units only
                    # where the name and lm-eval's aggregation agree (all metrics of lapr's tasks)
                    plan[name] = agg if agg and agg[1] == SAMPLE_TRANSFORM.get(name, "mean") else None
                if plan[name] is None:
                    continue
                sign, _ = plan[name]
                x = ex[name]
                value, weight = (x[0], x[1]) if isinstance(x, (tuple, list)) else (x, 1)
                rows.append({"task": task, "metric": name if filt == "none" else f"{name},{filt}",
                             "unit": int(ex["doc_id"]), "value": sign * float(value), "weight": float(weight)})
    return pd.DataFrame(rows, columns=SAMPLES)


@contextlib.contextmanager
def _env(**values: str):
    """Set environment variables for the duration of a block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _lm_eval_env_info(enabled: bool):
    """Unless `enabled`, make simple_evaluate skip its environment report and git lookup."""
    import lm_eval.evaluator as ev

    if enabled:
        yield
        return
    saved = ev.add_env_info, ev.get_git_commit_hash
    ev.add_env_info, ev.get_git_commit_hash = (lambda storage: None), (lambda: None)
    try:
        yield
    finally:
        ev.add_env_info, ev.get_git_commit_hash = saved


def _hflm_class(float_logits: bool):
    from lm_eval.models.huggingface import HFLM

    if not float_logits:
        return HFLM

    class FloatLogitsHFLM(HFLM):
        """HFLM whose model call returns float32 logits (log-probabilities are then taken in float32)."""

        def _model_call(self, inps, attn_mask=None, labels=None):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels).float()

    return FloatLogitsHFLM


def evaluate(model, tokenizer, tasks: str | Sequence[str], limit: int | float | None = None,
             batch_size: int | str = 1, max_length: int | None = None, device: str | None = None,
             bootstrap_iters: int = 1000, seed: int = 0, float_logits: bool = True,
             env_info: bool = False) -> pd.DataFrame:
    """Zero-shot lm-eval of `model` on `tasks`; one row per (task, metric). See `evaluate_units`."""
    return evaluate_units(model, tokenizer, tasks, limit=limit, batch_size=batch_size, max_length=max_length,
                          device=device, bootstrap_iters=bootstrap_iters, seed=seed, float_logits=float_logits,
                          env_info=env_info, log_samples=False)[0]


def evaluate_units(model, tokenizer, tasks: str | Sequence[str], limit: int | float | None = None,
                   batch_size: int | str = 1, max_length: int | None = None, device: str | None = None,
                   bootstrap_iters: int = 1000, seed: int = 0, float_logits: bool = True,
                   env_info: bool = False, log_samples: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Zero-shot lm-eval of `model` on `tasks`: (one row per (task, metric), one row per (task,
    metric, document) from lm-eval's logged samples (`units`; empty when log_samples is False)).

    model: causal LM module (transformers PreTrainedModel or one with `.config` and
        `.logits` outputs); moved to `device` when given, else evaluated where it is.
    tokenizer: its `transformers` tokenizer (copied: HFLM may set a pad token).
    tasks: names or a comma-separated string; `lapr_*` run offline, `paper_a`
        expands to PAPER_A_TASKS, any other name is a stock lm-eval task (hub).
    limit: at most this many documents per task (a float < 1 is a fraction, as in
        lm-eval); recorded in every row. None = full task.
    max_length: context window for lm-eval (rolling-window size for perplexity,
        left truncation otherwise). None = HFLM's choice: the model config's
        n_positions / max_position_embeddings / n_ctx, else the tokenizer's
        model_max_length, else 2048. The value used is in `df.attrs["max_length"]`.
    bootstrap_iters: lm-eval's bootstrap draws for stderrs that need it (only
        LAMBADA perplexity here; acc/acc_norm stderrs are closed-form whenever
        this is > 0); 0 skips all stderrs. lm-eval's default is 100,000 draws in a
        process pool; here 1,000 draws run in-process (DISABLE_MULTIPROC is set
        for the call), which is plenty for a standard error and costs < 1 s.
    seed: lm-eval's random/numpy/torch seeds (nothing here is sampled at 0-shot).
    float_logits: upcast the model's logits to float32 before lm-eval's log_softmax
        (stock HFLM takes it in the model's dtype, bf16 on GPU). A no-op for float32
        models (CPU); requests are unchanged either way (see tasks/README.md).
    env_info: let simple_evaluate collect its environment report (torch's
        collect_env: `pip list`, nvidia-smi and git in subprocesses, ~1.3 s per call
        on the 2-core machine, more than a 50-document task). Off by default: the
        report is dropped anyway, and lapr.provenance records versions/hardware.

    log_samples: have lm-eval keep every document's metric values (and its requests and
        responses: memory grows with the documents, not with the model) for `units`.

    Returns a DataFrame with columns task, metric, value, stderr, n_docs, limit
    (stderr NaN where lm-eval gives none; `df.attrs` holds the run settings) and the
    per-document frame (lapr.columns.SAMPLES).
    """
    import lm_eval

    names = task_names(tasks)
    if device is not None:
        model = model.to(device)
    lm = _hflm_class(float_logits)(pretrained=model, tokenizer=copy.deepcopy(tokenizer), backend="causal",
                                   batch_size=batch_size, max_length=max_length)
    start = time.perf_counter()
    with _env(DISABLE_MULTIPROC="1"), _lm_eval_env_info(env_info):
        results = lm_eval.simple_evaluate(
            model=lm, tasks=names, task_manager=task_manager(names), limit=limit,
            bootstrap_iters=bootstrap_iters, log_samples=log_samples, random_seed=seed,
            numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    seconds = time.perf_counter() - start
    df = tidy(results, limit)
    df.attrs.update({"lm_eval_version": lm_eval.__version__, "max_length": lm.max_length,
                     "batch_size": batch_size, "device": str(lm.device), "tasks": names,
                     "seconds": seconds, "bootstrap_iters": bootstrap_iters, "float_logits": float_logits,
                     "n_docs_total": {t: v.get("original") for t, v in results.get("n-samples", {}).items()}})
    return df, units(results)
