"""lapr/report/dag_timing.py: the DAG timing table from Snakemake's benchmark files (the tiny DAG
run in test_tiny_dag.py checks it on real ones)."""
import csv
import subprocess
import sys

import pytest

from lapr.report import dag_timing

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, *rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join("\t".join(map(str, r)) + "\n" for r in rows))


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_one_row_per_job_with_rule_and_wildcards(tmp_path):
    b = tmp_path / "benchmarks"
    _bench(b / "prune/model=gdn,method=wanda+lora.tsv", [12.5, "0:00:12", 900.1, 2000, 800, 850, 1.5, 2.5, 95.0, 11.9])
    _bench(b / "figures.tsv", [3, "0:00:03", 100, 200, 90, 95, 0, 1, 50, 1.5])
    _bench(b / "bench_ops/device=cpu.tsv", [0.01, "0:00:00", "NA", "NA", "NA", "NA", "NA", "NA", "NA", "NA"])
    _bench(b / "tokens/corpus=train.tsv", [2, "0:00:02", 10, 20, 9, 9, 0, 0, 90, 1.8],
           [4, "0:00:04", 30, 40, 29, 29, 0, 0, 92, 3.8])  # --benchmark-repeats: the mean
    out = tmp_path / "dag_timing.csv"
    res = subprocess.run([sys.executable, "-m", "lapr.report.dag_timing", str(b), "--exclude", "figures",
                          "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("3 jobs, 16 job-seconds")
    rows = _read(out)
    assert list(rows[0]) == ["rule", "wildcards", "s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in",
                             "io_out", "mean_load", "cpu_time"]
    assert [(r["rule"], r["wildcards"]) for r in rows] == [
        ("bench_ops", "device=cpu"), ("prune", "model=gdn,method=wanda+lora"), ("tokens", "corpus=train")]
    assert rows[0]["s"] == "0.01" and rows[0]["max_rss"] == ""  # NA: not sampled
    assert rows[1]["s"] == "12.50" and rows[1]["max_rss"] == "900.10"
    assert rows[2]["s"] == "3.00" and rows[2]["cpu_time"] == "2.80"
    assert "figures" in {r["rule"] for r in dag_timing.table(b)[1]}  # left out only when asked


def test_no_benchmarks_yet_is_an_empty_table(tmp_path):
    out = tmp_path / "dag_timing.csv"
    dag_timing.main([str(tmp_path / "benchmarks"), "--out", str(out)])
    assert out.read_text().strip() == "rule,wildcards"


def test_a_file_outside_the_layout_is_refused(tmp_path):
    _bench(tmp_path / "benchmarks/prune/deep/x.tsv", [1, "0:00:01", 1, 1, 1, 1, 0, 0, 1, 1])
    with pytest.raises(SystemExit, match="not <rule>.tsv or <rule>/<wildcards>.tsv"):
        dag_timing.main([str(tmp_path / "benchmarks"), "--out", str(tmp_path / "t.csv")])
    assert not (tmp_path / "t.csv").exists()
