"""Synthetic retrieval probes, seeded, no downloads.

- niah        passkey / needle-in-a-haystack over shipped filler text: make_samples, evaluate,
              cell_table (accuracy per context length x depth).
- mqar        multi-query associative recall (Zoology-style): make_batch, solve, train, recall,
              query_noise (paper A's query-noise probe).
- mqar_stage  the `mqar-train` / `mqar-eval` stages (thin CLI modules: mqar_train, mqar_eval).
"""
