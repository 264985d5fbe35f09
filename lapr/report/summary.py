"""The lines a full run ends with: each trained model's held-out perplexity against the unigram
baseline of its tokenizer (the Snakefile's `onsuccess` prints them; `python -m lapr.report.summary
results/<profile>` too)."""
from __future__ import annotations

import sys
from pathlib import Path

from lapr.report.results import load_pretrain


def model_lines(results_dir) -> list[str]:
    problems: list = []
    df, _ = load_pretrain(Path(results_dir), problems)
    df = df[df["corpus"].notna()]
    if df.empty:
        return [f"no trained model under {results_dir}/models (no metrics.json)"]
    lines = [f"trained models in {results_dir}/models: perplexity (unigram baseline of the same tokenizer)"]
    for model, part in df.groupby("model", sort=True):
        first = part.iloc[0]
        cells = [f"{r.corpus} {r.ppl:.1f} ({r.unigram_ppl:.1f}, {'below' if r.beats_unigram else 'NOT below'})"
                 for r in part.itertuples()]
        lines.append(f"  {model} [{first.family}, {int(first.parameters):,} parameters, {int(first.steps)} steps]: "
                     + "; ".join(cells))
    lines += [f"  problem: {p}" for p in problems]
    return lines


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m lapr.report.summary results/<profile>")
    print("\n".join(model_lines(args[0])))


if __name__ == "__main__":
    main()
