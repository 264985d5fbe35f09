"""Throughput and memory benchmarks against the key dimension d_k.

- `timing`: the timer (CUDA events / perf_counter, warm-up past autotuning, median + IQR over
  rotated random inputs) and peak-memory measurement;
- `ops`: single-kernel grid (chunk prefill, fused-recurrent decode step) over d_k, B, T, H, d_v;
- `models`: prefill and cached-decode throughput, peak and state memory of a checkpoint;
- `stage`: the `bench` stage (--settings mode 'ops' | 'model');
- `tables`: write / read the result CSVs;
- `plots`: `make_figures(bench_csvs, fig_dir)`;
- `gpu_run`: one self-contained GPU run (`python -m lapr.bench.gpu_run --out DIR`).
"""
