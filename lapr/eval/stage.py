"""`evaluate` stage: one checkpoint -> one tidy CSV of zero-shot lm-eval metrics and direct perplexities.

    python -m lapr evaluate --model results/embedded/pruned/dn/wanda/0.5 \\
        --out results/embedded/eval/dn/wanda/0.5.csv --model-name dn --method wanda --ratio 0.5 \\
        --settings '{"tasks": "paper_a", "limit": 50, "perplexity": {"max_tokens": 32768}}'

Rows (columns model, method, ratio, task, metric, value, stderr, n_docs, limit):

* lm-eval tasks (`lapr_*`, offline; see lapr/eval/tasks/README.md): one row per
  metric (acc, acc_norm, perplexity, word_perplexity, ...); `stderr` as lm-eval
  reports it (NaN where it has none, e.g. wikitext); `n_docs` documents scored;
  `limit` the per-task document limit (empty = all).
* `ppl/<dataset>`: token-level perplexity of a shipped corpus (lapr.data name) in
  independent windows of `seq_len` (lapr.eval.token_perplexity: the same recipe
  as the pretrain stage's metrics.json); metrics `ppl` and `nll` (nats/token)
  with the standard error over windows; `n_docs` = windows scored; `limit` =
  the `max_tokens` cap (empty = whole corpus).
* unigram floors (when `unigram` is on): `unigram_ppl` for each `ppl/<dataset>`
  and `unigram_perplexity` for (lapr_)lambada_openai (same passages, same target
  tokens as lm-eval), from an add-one unigram model of `unigram_corpus`.

Per-unit samples `<out stem>.samples.csv` (columns task, metric, unit, value, weight;
lapr.columns.SAMPLES) hold what each table value is a weighted mean of, for intervals
bootstrapped over units and paired pruned-vs-unpruned by `unit`: one row per window of a
`ppl/<dataset>` task (metric ppl: summed NLL in nats, predicted tokens), one per document and
metric of an lm-eval task (acc / acc_norm: 0/1, weight 1; word_perplexity: the page's NLL =
-loglikelihood in nats, its word count; byte_perplexity and bits_per_byte: NLL, bytes; LAMBADA
perplexity: NLL of the target, 1). With m = sum(value) / sum(weight) the table's value is m for
accuracies, exp(m) for perplexities, m / ln 2 for bits_per_byte (lapr.columns.SAMPLE_TRANSFORM).
Unigram floors have none.

A provenance JSON `<out stem>.provenance.json` (settings as resolved, versions,
hardware, per-part wall and CPU seconds, lm-eval's max_length and document counts)
is written beside the CSV; all three atomically, the CSV last.

Several checkpoints with the same settings can share one process (the imports
cost ~10 s of CPU per process on the embedded machine): give `--model` and
`--out` one value per checkpoint and `--model-name/--method/--ratio` one value
each or one per checkpoint; or call `evaluate_checkpoint` in a loop.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lapr import columns
from lapr.settings import Settings, SettingsError, setting

COLUMNS = columns.EVAL  # shared with the report (lapr/columns.py)

# Token corpora that `perplexity.datasets` / `unigram_corpus` may name, with friendly aliases.
CORPORA = ("gutenberg_valid", "wikitext2_test_raw", "gutenberg_train")
ALIASES = {"gutenberg-valid": "gutenberg_valid", "gutenberg-train": "gutenberg_train",
           "wikitext-2-raw": "wikitext2_test_raw", "wikitext2": "wikitext2_test_raw",
           "wikitext-2": "wikitext2_test_raw", "wikitext2-raw": "wikitext2_test_raw"}

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}
CORPUS_NAMES = CORPORA + tuple(ALIASES)  # what a setting may name; canonical_corpus maps the aliases
DEVICES = ("auto", "cpu", "cuda") + tuple(f"cuda:{i}" for i in range(8))


@dataclass
class Perplexity(Settings):
    """Direct perplexity rows of `lapr evaluate` (the config's `evaluate.perplexity`)."""

    SECTION = "evaluate.perplexity"
    datasets: str | list[str] | None = setting(["gutenberg_valid", "wikitext2_test_raw"],
                                                "corpora ([] or null: no ppl rows)", choices=CORPUS_NAMES,
                                                items=dict(choices=CORPUS_NAMES))
    max_tokens: int | None = setting(32768, "first tokens of each corpus (null: the whole corpus)", low=1)
    seq_len: int = setting(512, "window length", low=2)
    batch_size: int = setting(8, low=1)


@dataclass
class Evaluate(Settings):
    """Settings of `lapr evaluate` (the config's `evaluate` section); resolve_settings fills in what
    depends on the tasks (names, per-task limits) and maps aliases to canonical names."""

    SECTION = "evaluate"
    tasks: str | list[str] | None = setting("paper_a", "lm-eval task names, a list or a comma-separated string "
                                            "('paper_a' = the paper's set; [] or null: no lm-eval)")
    task_ratios: list[float] | None = setting(
        None, "pruning ratios whose checkpoints run the lm-eval tasks (null: every checkpoint); the unpruned model "
        "(ratio 0) always runs them and perplexity runs on every checkpoint: lm-eval is most of a small "
        "checkpoint's evaluation", unique=True, items=dict(above=0, below=1))
    limit: float | dict[str, float | None] | None = setting(
        None, "documents per task: null (all), an integer >= 1, a fraction in (0, 1), or {task: limit} with an "
        "optional 'default'", above=0, items=dict(above=0))
    batch_size: int = setting(16, "lm-eval batch size", low=1)
    max_length: int | None = setting(None, "lm-eval context window (null: the model config's)", low=1)
    device: str | None = setting(None, "null: cuda if available, else cpu", choices=DEVICES)
    dtype: str | None = setting(None, "null: bfloat16 on cuda, float32 on cpu", choices=tuple(DTYPES))
    bootstrap_iters: int = setting(1000, "lm-eval bootstrap draws (LAMBADA perplexity stderr); 0: no stderrs",
                                   low=0)
    float_logits: bool = setting(True, "log-probabilities from float32 logits (matters for bf16 models only)")
    tokenizer: str | None = setting(None, "null: the checkpoint's own; else a lapr.data.load_tokenizer name/dir")
    threads: int | None = setting(None, "torch intra-op threads (null: torch's default, OMP_NUM_THREADS)", low=1)
    perplexity: Perplexity | None = setting(Perplexity(), "null: no ppl rows")
    unigram: bool | str = setting("auto", "unigram floors: true | false | 'auto' (only for the unpruned: method "
                                  "none / ratio 0)", choices=(True, False, "auto"))
    unigram_corpus: str = setting("gutenberg_train", choices=CORPUS_NAMES)
    unigram_chars: int | None = setting(2_000_000, "characters of unigram_corpus counted (null: all)", low=1)


# ----------------------------------------------------------------------------- settings

def canonical_corpus(name: str) -> str:
    """A corpus name a setting accepts (Perplexity.datasets, ...) with its alias resolved."""
    return ALIASES.get(name, name)


def _limit(value, where: str):
    """A limit the model accepted (null or > 0): an integer >= 1 (documents) or a fraction < 1."""
    if value is None or value < 1:
        return value if value is None else float(value)
    if value != int(value):
        raise SettingsError(where, f"expected null, an integer >= 1 or a fraction in (0, 1), got {value!r}")
    return int(value)


def _limits(limit, tasks: list[str], where: str) -> dict:
    """settings.limit -> {task: limit} for every task; a mapping may name tasks and a "default"."""
    if not isinstance(limit, dict):
        value = _limit(limit, f"{where}.limit")
        return {t: value for t in tasks}
    unknown = set(limit) - set(tasks) - {"default"}
    if unknown:
        raise SettingsError(f"{where}.limit", f"key(s) {sorted(unknown)} are neither 'default' nor in the tasks "
                            f"{tasks}")
    default = _limit(limit.get("default"), f"{where}.limit.default")
    return {t: _limit(limit[t], f"{where}.limit.{t}") if t in limit else default for t in tasks}


def resolve_settings(settings: dict | str | None, where: str = "evaluate") -> dict:
    """User settings (dict or JSON string) checked by Evaluate, with the task names, per-task limits
    and canonical corpus / dtype names filled in; SettingsError names the key (under `where`)."""
    out = Evaluate.parse(settings or {}, where).as_dict()

    from lapr.eval.harness import local_tasks, task_names
    tasks = out["tasks"]
    if tasks is None or (not isinstance(tasks, str) and len(tasks) == 0):
        out["tasks"] = []
    else:
        out["tasks"] = task_names(tasks)
        local = local_tasks()
        bad = [t for t in out["tasks"] if t.startswith("lapr_") and t not in local]
        if bad:
            raise SettingsError(f"{where}.tasks", f"unknown local task(s) {bad}; known: {sorted(local)} "
                                "(or 'paper_a'; other names are stock lm-eval tasks that need the hub)")
    out["limit"] = _limits(out["limit"], out["tasks"], where)
    if out["dtype"] is not None:
        out["dtype"] = DTYPES[out["dtype"]]
    out["unigram_corpus"] = canonical_corpus(out["unigram_corpus"])
    ppl = out["perplexity"] or {**Perplexity.defaults(), "datasets": []}
    datasets = ppl["datasets"] or []
    ppl["datasets"] = list(dict.fromkeys(canonical_corpus(d) for d in ([datasets] if isinstance(datasets, str)
                                                                        else datasets)))
    out["perplexity"] = ppl
    return out


# ----------------------------------------------------------------------------- pieces

def load_checkpoint(model_dir: str | Path, settings: dict):
    """(model, tokenizer) for a checkpoint directory; the tokenizer from settings or the directory."""
    from lapr.data import load_tokenizer
    from lapr.models import load_model, resolve_device

    import torch

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: no Hugging Face checkpoint there (config.json missing)")
    device = resolve_device(settings["device"])
    dtype = getattr(torch, settings["dtype"]) if settings["dtype"] else None
    model = load_model(model_dir, device=device, dtype=dtype)
    if settings["tokenizer"] is not None:
        tokenizer = load_tokenizer(settings["tokenizer"])
    elif any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = load_tokenizer(str(model_dir))
    else:
        raise FileNotFoundError(f"--model {model_dir} holds no tokenizer files; save the tokenizer with the "
                                "checkpoint or set settings.tokenizer (e.g. \"gutenberg-bpe-8k\")")
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has {len(tokenizer)} tokens but the model's "
                         f"vocab_size is {model.config.vocab_size}: wrong tokenizer for {model_dir}")
    return model, tokenizer


def corpus_tokens(name: str, tokenizer, max_tokens: int | None):
    """The first `max_tokens` tokens of a shipped corpus (EOS after each document), tokenising only what is needed."""
    from lapr.data import encode_corpus

    # ~4 chars per token for BPE on English; 8x leaves room for any sane tokenizer, and a short
    # result is topped up by encoding the whole corpus.
    chars = None if max_tokens is None else max_tokens * 8 + 4096
    tokens = encode_corpus(name, tokenizer, max_chars=chars, progress=False)
    if max_tokens is not None and len(tokens) < max_tokens and chars is not None:
        tokens = encode_corpus(name, tokenizer, progress=False)
    return tokens if max_tokens is None else tokens[:max_tokens]


class _Timer:
    """Wall and CPU (process) seconds of a block, added to info["seconds"] / info["cpu_seconds"]."""

    def __init__(self, info: dict, key: str):
        self.info, self.key = info, key

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.info["seconds"][self.key] = time.perf_counter() - self.wall
        self.info["cpu_seconds"][self.key] = time.process_time() - self.cpu
        return False


def _row(task, metric, value, stderr=math.nan, n_docs=math.nan, limit=None) -> dict:
    return {"task": task, "metric": metric, "value": float(value), "stderr": float(stderr),
            "n_docs": n_docs, "limit": limit}


def evaluate_model(model, tokenizer, settings: dict, unigram: bool, seed: int = 0,
                   log=print) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """All rows of one checkpoint (without the model/method/ratio columns), an info dict and the
    per-unit samples (lapr.columns.SAMPLES)."""
    import torch

    from lapr.eval.baselines import lambada_unigram, unigram_logprobs
    from lapr.eval.harness import evaluate_units
    from lapr.eval.perplexity import token_perplexity, window_samples

    rows, info = [], {"seconds": {}, "cpu_seconds": {}, "n_docs_total": {}}
    vocab = model.config.vocab_size
    logp = train_tokens = None
    if unigram:
        from lapr.data import encode_corpus
        with _Timer(info, "unigram_counts"):
            train_tokens = encode_corpus(settings["unigram_corpus"], tokenizer,
                                         max_chars=settings["unigram_chars"], progress=False)
            logp = unigram_logprobs(train_tokens, vocab)
        info["unigram_train_tokens"] = int(len(train_tokens))

    frames, units = [], []
    for task in settings["tasks"]:
        limit = settings["limit"][task]
        log(f"[evaluate] lm-eval {task} (limit={limit})", flush=True)
        with _Timer(info, task):
            df, per_doc = evaluate_units(model, tokenizer, [task], limit=limit,
                                         batch_size=settings["batch_size"], max_length=settings["max_length"],
                                         bootstrap_iters=settings["bootstrap_iters"], seed=seed,
                                         float_logits=settings["float_logits"])
        info["max_length"] = df.attrs["max_length"]
        info["lm_eval_version"] = df.attrs["lm_eval_version"]
        info["n_docs_total"].update(df.attrs["n_docs_total"])
        frames.append(df)
        units.append(per_doc)
        shown = ", ".join(f"{m}={v:.4g}" for m, v in zip(df.metric, df.value))
        log(f"[evaluate]   {shown}  ({info['seconds'][task]:.1f} s)", flush=True)
        if logp is not None and task in ("lapr_lambada_openai", "lambada_openai"):  # same passages
            from lapr.eval.docs import lambada_docs
            texts = lambada_docs()["test"]["text"]
            n = int(df["n_docs"].iloc[0]) if len(df) else len(texts)
            base = lambada_unigram(tokenizer, logp, texts[:n])
            rows.append(_row(task, "unigram_perplexity", base["perplexity"], n_docs=base["docs"], limit=limit))
            log(f"[evaluate]   unigram LAMBADA perplexity {base['perplexity']:.4g}", flush=True)

    ppl = settings["perplexity"]
    for name in ppl["datasets"]:
        task = f"ppl/{name}"
        with _Timer(info, task):
            tokens = corpus_tokens(name, tokenizer, ppl["max_tokens"])
            with torch.inference_mode():
                res = token_perplexity(model, tokens, ppl["seq_len"], batch_size=ppl["batch_size"])
        rows += [_row(task, "ppl", res["ppl"], res["ppl_stderr"], res["windows"], ppl["max_tokens"]),
                 _row(task, "nll", res["nll"], res["nll_stderr"], res["windows"], ppl["max_tokens"])]
        units.append(pd.DataFrame(window_samples(task, res), columns=columns.SAMPLES))
        msg = f"[evaluate] {task}: ppl {res['ppl']:.4g} over {res['tokens']} tokens"
        if train_tokens is not None:
            from lapr.data import eval_windows, unigram_baseline
            scored = eval_windows(tokens, ppl["seq_len"])[:, 1:].flatten().numpy()
            base = unigram_baseline(train_tokens, scored, vocab)
            rows.append(_row(task, "unigram_ppl", base["ppl"], n_docs=res["windows"], limit=ppl["max_tokens"]))
            msg += f" (unigram {base['ppl']:.4g})"
        log(msg + f"  ({info['seconds'][task]:.1f} s)", flush=True)

    frames.append(pd.DataFrame(rows, columns=["task", "metric", "value", "stderr", "n_docs", "limit"]))
    frames = [f for f in frames if len(f)]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["task", "metric", "value", "stderr", "n_docs", "limit"])
    units = [u for u in units if len(u)]
    samples = pd.concat(units, ignore_index=True) if units else pd.DataFrame(columns=columns.SAMPLES)
    return out, info, samples


# ----------------------------------------------------------------------------- stage contract

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, nargs="+",
                        help="Hugging Face checkpoint directory (several: evaluated in turn in one process)")
    parser.add_argument("--out", required=True, nargs="+",
                        help="tidy CSV to write per checkpoint (provenance JSON goes beside it)")
    parser.add_argument("--model-name", default=None, nargs="+",
                        help="value of the `model` column (default: the checkpoint directory's name)")
    parser.add_argument("--method", default=["none"], nargs="+",
                        help="value of the `method` column ('none' = unpruned)")
    parser.add_argument("--ratio", type=float, default=[0.0], nargs="+",
                        help="value of the `ratio` column (0 = unpruned)")
    parser.add_argument("--settings", default="{}", help="JSON object; keys: " + ", ".join(Evaluate.keys()))
    parser.add_argument("--seed", type=int, default=0)


def evaluate_checkpoint(model_dir: str | Path, out: str | Path, *, model_name: str | None = None,
                        method: str = "none", ratio: float = 0.0, settings: dict | str | None = None,
                        seed: int = 0) -> pd.DataFrame:
    """Evaluate one checkpoint and write `out` (CSV), `<out stem>.samples.csv` and
    `<out stem>.provenance.json`; returns the rows.

    The stage's `run` is this function on the command-line arguments; a rule that evaluates several
    checkpoints in one process (saving the ~10 s of imports per checkpoint) can call it in a loop.
    """
    from lapr import provenance

    settings = resolve_settings(settings)
    out, model_dir = Path(out), Path(model_dir)
    check_paths([model_dir], [out], settings)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"--model {model_dir}: directory not found")
    model_name = model_name or model_dir.name
    ratio = float(ratio)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"--ratio must be in [0, 1], got {ratio}")
    unigram = settings["unigram"] is True or (settings["unigram"] == "auto" and (method == "none" or ratio == 0))
    if settings["threads"]:
        import torch
        torch.set_num_threads(settings["threads"])

    if not runs_tasks(settings, ratio):
        print(f"[evaluate] lm-eval tasks skipped at ratio {ratio:g} (task_ratios {settings['task_ratios']})")
        settings = {**settings, "tasks": []}

    start, cpu_start = time.perf_counter(), time.process_time()
    print(f"[evaluate] {model_name} / {method} / {ratio:g}: loading {model_dir}", flush=True)
    model, tokenizer = load_checkpoint(model_dir, settings)
    load = (time.perf_counter() - start, time.process_time() - cpu_start)
    df, info, samples = evaluate_model(model, tokenizer, settings, unigram=unigram, seed=seed)
    info["seconds"]["load"], info["cpu_seconds"]["load"] = load
    info["seconds"]["total"] = time.perf_counter() - start
    info["cpu_seconds"]["total"] = time.process_time() - cpu_start

    df.insert(0, "ratio", ratio)
    df.insert(0, "method", method)
    df.insert(0, "model", model_name)
    df = df[COLUMNS]
    check_values(df, model_dir)
    param = next(model.parameters())
    prov = provenance.record(settings, seed=seed, device=param.device, stage="evaluate",
                             model_dir=str(model_dir), model=model_name, method=method, ratio=ratio,
                             tokenizer=tokenizer.name_or_path, vocab_size=model.config.vocab_size,
                             parameters=sum(p.numel() for p in model.parameters()), dtype=str(param.dtype),
                             unigram=unigram, **info)
    provenance.write_json(provenance_path(out), prov)
    provenance.write_table(samples_path(out), samples[columns.SAMPLES])
    provenance.write_table(out, df)   # last: the CSV (the rule's output) appears only when all is written
    print(f"[evaluate] wrote {len(df)} rows to {out} in {info['seconds']['total']:.1f} s "
          f"({info['cpu_seconds']['total']:.1f} s CPU)", flush=True)
    return df


def runs_tasks(settings: dict, ratio: float) -> bool:
    """Whether a checkpoint at `ratio` runs the lm-eval tasks (settings.task_ratios; 0 = unpruned always)."""
    chosen = settings["task_ratios"]
    return chosen is None or ratio == 0 or any(math.isclose(ratio, r) for r in chosen)


def provenance_path(out: Path) -> Path:
    return out.with_name(out.stem + ".provenance.json")


def samples_path(out: Path) -> Path:
    """The per-unit samples beside a result table (a lapr.columns.SIDECARS suffix)."""
    return out.with_name(out.stem + columns.SAMPLES_SUFFIX)


def check_paths(models: list, outs: list, settings: dict) -> None:
    """No CSV (or its provenance JSON or samples) is, holds or lies in a checkpoint or the tokenizer."""
    from lapr import paths

    paths.check_outputs({"--out": [p for o in outs
                                   for p in (Path(o), provenance_path(Path(o)), samples_path(Path(o)))]},
                        {"--model": list(models), "settings.tokenizer": paths.local(settings["tokenizer"])})


def check_values(df: pd.DataFrame, where) -> None:
    """ValueError for a row whose metric is NaN / inf: written, it would read as an empty cell
    beside complete ones (e.g. NaN weights: NaN perplexity, accuracies of argmax over NaN)."""
    bad = df[~pd.to_numeric(df["value"], errors="coerce").map(math.isfinite)]
    if len(bad):
        row = bad.iloc[0]
        raise ValueError(f"{where}: {row['task']} {row['metric']} is {row['value']} ({len(bad)} of {len(df)} "
                         f"metrics not finite): no result row is written with a missing metric")


def _per_checkpoint(values, n: int, flag: str) -> list:
    values = values if isinstance(values, list) else [values]
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"{flag}: give one value or one per --model ({n}), got {len(values)}")
    return values


def run(args: argparse.Namespace) -> None:
    """One checkpoint per the stage contract; several (same settings) to share the import/start-up cost."""
    models = args.model if isinstance(args.model, list) else [args.model]
    n = len(models)
    outs = args.out if isinstance(args.out, list) else [args.out]
    if len(outs) != n:
        raise ValueError(f"--out: give one CSV per --model ({n}), got {len(outs)}")
    names = _per_checkpoint(args.model_name, n, "--model-name") if args.model_name else [None] * n
    methods = _per_checkpoint(args.method, n, "--method")
    ratios = _per_checkpoint(args.ratio, n, "--ratio")
    settings = resolve_settings(args.settings)  # validate once, before any work
    check_paths(models, outs, settings)
    for model, out, name, method, ratio in zip(models, outs, names, methods, ratios):
        evaluate_checkpoint(model, out, model_name=name, method=method, ratio=ratio, settings=settings,
                            seed=args.seed)
