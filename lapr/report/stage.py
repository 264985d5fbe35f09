"""`figures` stage: every table, figure and the claims check of one profile, from results/ only.

    python -m lapr figures --results results/embedded --out figures/embedded \\
        --settings '{"ratio": 0.5, "ppl_task": null, "claims": {"marginal_ppl": 0.05}}'

Reads results/PROFILE through lapr.report.results (never trains, profiles or evaluates anything;
missing stages give empty tables, 'no data' figures and 'missing' claims) and writes, each file
atomically, into --out:

  README.md                 index: claims check, then every file with a one-line caption
  tables/NAME.{csv,md,tex}  lapr.report.tables (+ tables/claims.*: lapr.report.claims)
  NAME.{png,pdf}            lapr.report.figures (fixed set: lapr.report.FIGURES; fixed_outputs() lists all)
  profile/KEY/, bench/, heads/  figures drawn by the stage helpers' plot modules, when present
  provenance.json           lapr.provenance.record + the stages found and any problems

Settings (JSON object; every key optional): the Figures model below, its defaults and checks.

Captions (one line each in README.md, in full for `snakemake --report`) live in
lapr/report/captions/NAME.rst.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from lapr import paths, provenance
from lapr.report import CSV_ONLY, FIGURES, TABLES
from lapr.settings import Settings, SettingsError, setting


@dataclass
class Figures(Settings):
    """Settings of `lapr figures` (the config's `figures` section)."""

    SECTION = "figures"
    ratio: float = setting(0.5, "the pruning ratio of the lm-eval table / bars and claim A1", above=0, below=1)
    ppl_task: str | None = setting(None, "perplexity corpus for claims and single-corpus figures "
                                   "('wikitext2_test_raw' or 'ppl/wikitext2_test_raw'); null: wikitext2, else "
                                   "gutenberg_valid, else the first")
    # overrides only: the defaults stay in lapr/report/claims.py THRESHOLDS, beside the claims they judge
    claims: dict[str, float] = setting({}, "threshold overrides (keys of lapr.report.claims.THRESHOLDS)")
    delegate: bool = setting(True, "also draw the stage helpers' figures (profiling, bench, heads)")

    def check(self, where: str) -> None:
        from lapr.report.claims import THRESHOLDS

        for key in self.claims:
            if key not in THRESHOLDS:
                raise SettingsError(f"{where}.claims.{key}", f"unknown key; allowed: {', '.join(sorted(THRESHOLDS))}")


CAPTIONS = Path(__file__).resolve().parent / "captions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", required=True, help="results directory of one profile (results/PROFILE)")
    parser.add_argument("--out", required=True, help="output directory (figures/PROFILE)")
    parser.add_argument("--settings", default="{}", help="JSON object; keys: " + ", ".join(Figures.keys()))
    parser.add_argument("--seed", type=int, default=None, help="unused (no randomness); accepted for uniformity")


def parse_settings(raw) -> dict:
    """The figures settings (a dict or JSON string) with every key filled in (Figures)."""
    return Figures.parse(raw).as_dict()


def fixed_outputs() -> dict[str, str]:
    """Files every run writes (relative to --out) -> caption name: what a Snakemake rule can declare as
    outputs / report() items. Figures of the stage helpers (profile/, bench/, heads/) vary with the
    results and are not listed."""
    out = {"README.md": "", "provenance.json": ""}
    for name in FIGURES:
        out.update({f"{name}.png": name, f"{name}.pdf": name})
    for name in TABLES:
        exts = ("csv",) if name in CSV_ONLY else ("csv", "md", "tex")
        out.update({f"tables/{name}.{ext}": name for ext in exts})
    return out


# ----------------------------------------------------------------------------- captions

def caption_text(name: str) -> str:
    """Full caption of NAME (the .rst file's text), '' if there is none."""
    path = CAPTIONS / f"{name}.rst"
    return path.read_text().strip() if path.is_file() else ""


def caption_for(rel_path: str) -> str:
    """One-line caption of an output file: its stem's caption, else the stem without a device suffix
    (bench_ops_cpu -> bench_ops), else its top folder's (heads/...) caption; first paragraph, one line."""
    p = Path(rel_path)
    stem = p.stem
    candidates = [stem, stem.rsplit("_", 1)[0] if "_" in stem else stem]
    if len(p.parts) > 1:
        candidates.append(p.parts[0])
    for name in candidates:
        text = caption_text(name)
        if text:
            return " ".join(text.split("\n\n")[0].split())
    return ""


# ----------------------------------------------------------------------------- index

# A results directory may hold an analysis written by people (results/gpu/analysis.md): the index
# embeds it, so the figures' README carries the reading of the numbers and is still rebuilt from files.
ANALYSIS = "analysis.md"


def _link(rel: str) -> str:
    return f"[{rel}]({rel.replace(' ', '%20')})"


def index_markdown(res, settings: dict, tables: list, figures: list, delegated: list[Path], out: Path,
                   claims_md: str, problems: list[str]) -> str:
    stages = res.stages()
    found = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in stages.items())
    lines = [f"# Figures and tables: profile `{res.profile_name}`", "",
             f"Built by `python -m lapr figures --results {res.root} --out {out}` from the result files only "
             f"(no training, profiling or evaluation). Results found per stage: {found}.",
             f"Pruning ratio shown in single-ratio views: r = {settings['ratio']:g}. "
             "Captions: lapr/report/captions/*.rst.", ""]
    analysis = Path(res.root) / ANALYSIS
    if analysis.is_file():  # people's reading of these results, kept beside them and shown first
        rel = os.path.relpath(analysis, out)  # the index lives in `out`: links are relative to it
        lines += [f"## What the results say ([{analysis}]({rel}), written by people)", "",
                  analysis.read_text().strip(), ""]
    lines += ["## Claims check", "",
             claims_md.split("\n", 2)[2] if claims_md.count("\n") >= 2 else claims_md, "", "## Figures", ""]
    for f in figures:
        png = next((p for p in f.paths if p.suffix == ".png"), None)
        pdf = next((p for p in f.paths if p.suffix == ".pdf"), None)
        if png is None:
            continue
        rel = str(png.relative_to(out))
        extra = f" ([pdf]({pdf.relative_to(out)}))" if pdf else ""
        status = "" if f.has_data else " _(no data yet)_"
        lines.append(f"- {_link(rel)}{extra}: {caption_for(rel)}{status}")
    lines += ["", "## Tables", ""]
    for t in tables:
        rel_csv = f"tables/{t.name}.csv"
        main = rel_csv if t.csv_only else f"tables/{t.name}.md"
        others = "" if t.csv_only else f" ([csv]({rel_csv}), [tex](tables/{t.name}.tex))"
        status = f" _(no data: {t.note})_" if t.empty else ""
        lines.append(f"- {_link(main)}{others}: {caption_for(t.name)}{status}")
    lines += ["", "## Figures drawn by the stage helpers", ""]
    pngs = sorted(p for p in delegated if Path(p).suffix == ".png")
    if not pngs:
        lines.append("_None (no profiling / bench / head-pruning results, or their plot modules are absent)._")
    for p in pngs:
        rel = str(Path(p).relative_to(out))
        lines.append(f"- {_link(rel)} ([pdf]({Path(rel).with_suffix('.pdf')})): {caption_for(rel)}")
    if problems:
        lines += ["", "## Figures the stage helpers could not draw", ""] + [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- stage

def build_report(results_dir, out_dir, settings: dict | None = None, log=print) -> dict:
    """Collect, then write every table, figure, the claims check and the index. Returns a summary."""
    from lapr.report.claims import claims_table
    from lapr.report.results import collect
    from lapr.report.figures import build_figures, delegate_figures
    from lapr.report.tables import build_tables, to_markdown, write_table

    s = parse_settings(settings or {})
    start = time.perf_counter()
    results_dir, out = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"--results {results_dir}: directory not found")
    paths.check_outputs({"--out": out}, {"--results": results_dir})
    res = collect(results_dir)
    if res.problems:  # a result the pipeline produced is never dropped from the report in silence
        more = f" (and {len(res.problems) - 1} more)" if len(res.problems) > 1 else ""
        raise ValueError(f"{len(res.problems)} result file(s) could not be read: {res.problems[0]}{more}")
    out.mkdir(parents=True, exist_ok=True)
    log(f"[figures] collected {results_dir} in {time.perf_counter() - start:.1f} s: {res.stages()}")

    tables = build_tables(res, ratio=s["ratio"], ppl_task=s["ppl_task"])
    claims = claims_table(res, s["claims"], s["ppl_task"])
    tables.append(claims)
    written = []
    for t in tables:
        written += write_table(t, out / "tables")
    log(f"[figures] {len(tables)} tables ({time.perf_counter() - start:.1f} s)")

    figures = build_figures(res, out, ratio=s["ratio"], ppl_task=s["ppl_task"])
    written += [p for f in figures for p in f.paths]
    log(f"[figures] {len(figures)} report figures ({time.perf_counter() - start:.1f} s)")

    problems = list(res.problems)
    delegated = []
    if s["delegate"]:
        delegated, more = delegate_figures(res, out)
        problems += more
        written += delegated
        log(f"[figures] {len(delegated)} files from the stage helpers ({time.perf_counter() - start:.1f} s)")
    for p in problems:
        log(f"[figures] problem: {p}")

    verdicts = claims.df["verdict"].value_counts().to_dict()
    seconds = time.perf_counter() - start
    readme = index_markdown(res, s, tables, figures, delegated, out, to_markdown(_claims_view(claims)), problems)
    with provenance.atomic_path(out / "README.md") as tmp:
        tmp.write_text(readme)
    written.append(out / "README.md")
    summary = {"results": str(results_dir), "stages": res.stages(), "verdicts": verdicts,
               "files": len(written) + 1, "problems": problems, "seconds": round(seconds, 2)}
    provenance.write_json(out / "provenance.json", provenance.record(s, None, "cpu", stage="figures", **summary))
    log(f"[figures] wrote {len(written) + 1} files to {out} in {time.perf_counter() - start:.1f} s; "
        f"claims: {verdicts}")
    return summary


def _claims_view(claims):
    """The claims table as shown in README.md (criterion and value live in the CSV / .md files)."""
    from lapr.report.tables import Table
    df = claims.df[["id", "claim", "model", "measured", "verdict", "reason"]]
    return Table("claims", claims.title, df, claims.note)


def run(args: argparse.Namespace) -> None:
    build_report(args.results, args.out, parse_settings(args.settings))


__all__ = ["Figures", "TABLES", "add_arguments", "run", "parse_settings", "build_report", "fixed_outputs",
           "caption_for", "caption_text"]
