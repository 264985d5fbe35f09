"""DAG timing table: one row per job, from the benchmark file Snakemake writes for every job
(`benchmark:` in workflow/rules/*.smk: results/<p>/benchmarks/<rule>/<name=value,...>.tsv, or
results/<p>/benchmarks/<rule>.tsv for a job without wildcards). The figures job builds it:

    python -m lapr.report.dag_timing results/P/benchmarks --exclude figures redraw --out results/P/dag_timing.csv

Columns: rule, wildcards (name=value,... as in the file name), then Snakemake's measurements as it
writes them: s (wall seconds), max_rss, max_vms, max_uss, max_pss (MB), io_in, io_out (MB),
mean_load (CPU %), cpu_time (s). A value Snakemake could not sample (NA: a job shorter than its
sampling interval) is left empty; a job benchmarked with repeats gets the mean of its runs. Rows are
sorted by rule, then wildcards. Every file under the folder counts: a job since dropped from the
config keeps its row until its file is deleted. The per-rule totals go to stdout (the job's log).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from lapr.provenance import atomic_path

SKIP = {"h:m:s", "jobid", "rule_name", "wildcards"}  # h:m:s repeats s; the rest is in the file name


def job_of(path: Path, root: Path) -> tuple[str, str]:
    """(rule, wildcards) of a benchmark file, from its place under `root`."""
    rel = path.relative_to(root)
    if len(rel.parts) == 1:
        return rel.stem, ""
    if len(rel.parts) == 2:
        return rel.parts[0], rel.stem
    raise ValueError(f"{path}: not <rule>.tsv or <rule>/<wildcards>.tsv under {root}")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # NA, or '-' for a missing value


def read_benchmark(path: Path) -> dict[str, float | None]:
    """A benchmark TSV as {column: value}, the mean over its rows (repeats)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: a benchmark file without a measurement")
    out = {}
    for col in rows[0]:
        if col in SKIP:
            continue
        values = [_number(r[col]) for r in rows]
        out[col] = None if any(v is None for v in values) else sum(values) / len(values)
    return out


def table(root: str | Path, exclude=()) -> tuple[list[str], list[dict]]:
    """(columns, rows) of every benchmark file under `root` whose rule is not in `exclude`."""
    root = Path(root)
    rows, columns = [], ["rule", "wildcards"]
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        if path.name.startswith("."):
            continue
        rule, wildcards = job_of(path, root)
        if rule in exclude:
            continue
        measured = read_benchmark(path)
        columns += [c for c in measured if c not in columns]
        rows.append({"rule": rule, "wildcards": wildcards, **measured})
    rows.sort(key=lambda r: (r["rule"], r["wildcards"]))
    return columns, rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def write(root, out, exclude=()) -> list[dict]:
    columns, rows = table(root, exclude)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([_cell(r.get(c)) for c in columns] for r in rows)
    return rows


def summary(rows: list[dict]) -> list[str]:
    per_rule: dict[str, list[float]] = {}
    for r in rows:
        per_rule.setdefault(r["rule"], []).append(r.get("s") or 0.0)
    lines = [f"{len(rows)} jobs, {sum(sum(v) for v in per_rule.values()):.0f} job-seconds"]
    for rule, secs in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"  {rule}: {len(secs)} jobs, {sum(secs):.1f} s (mean {sum(secs) / len(secs):.1f} s)")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lapr.report.dag_timing", description=__doc__.split("\n")[0])
    parser.add_argument("benchmarks", help="folder of the benchmark files (results/<profile>/benchmarks)")
    parser.add_argument("--out", required=True, help="CSV path (results/<profile>/dag_timing.csv)")
    parser.add_argument("--exclude", nargs="*", default=[], help="rules left out (the job building the table)")
    args = parser.parse_args(argv)
    try:
        rows = write(args.benchmarks, args.out, set(args.exclude))
    except ValueError as e:
        sys.exit(f"lapr.report.dag_timing: error: {e}")
    print("\n".join(summary(rows)))


if __name__ == "__main__":
    main()
