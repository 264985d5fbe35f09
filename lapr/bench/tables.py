"""Bench result tables: written atomically with the known columns first, read back with the error
column as strings ('' where the row ran). Light on purpose (pandas only): figures read through it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lapr import provenance

TIMING = "timing"  # a row's TimingResult (lapr.bench.ops pools them over rounds): kept out of the CSVs


def write_rows(path, rows: list[dict], columns: list[str]) -> Path:
    df = pd.DataFrame(rows).drop(columns=[TIMING], errors="ignore")
    df = df.reindex(columns=columns + [c for c in df.columns if c not in columns])
    return provenance.write_table(Path(path), df)


def read_rows(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"error": "string"}).fillna({"error": ""})
