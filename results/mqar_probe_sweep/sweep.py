"""GDN MQAR probe sweep on the device's CPU cores: which training setting learns at every seed?"""
import json, os, sys, time
os.environ["CUDA_VISIBLE_DEVICES"] = ""
from concurrent.futures import ProcessPoolExecutor, as_completed

def one(job):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)
    from lapr.probes import mqar
    from lapr.models import build_model
    name, fam, seed, lr, a_range, bs, steps = job
    task = {"vocab_size": 64, "seq_len": 64, "num_kv_pairs": 8, "num_queries": None}
    spec = {"family": fam, "hidden_size": 128, "num_layers": 2, "num_heads": 2, "head_k_dim": 32,
            "head_v_dim": 32, "mlp_ratio": 2, "vocab_size": 64, "max_length": 64}
    torch.manual_seed(seed)
    model = build_model(spec, seed=seed)
    if a_range:
        g = torch.Generator().manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "A_log"):
                m.A_log.data = torch.log(torch.empty(m.A_log.shape).uniform_(*a_range, generator=g))
    settings = {"steps": steps, "batch_size": bs, "lr": lr, "warmup": 30, "weight_decay": 0.1, "grad_clip": 1.0,
                "eval_every": 50, "eval_n": 256, "target_recall": 0.98, "time_limit_s": None, "threads": 1}
    t = time.time()
    r = mqar.train(model, settings, task, seed=seed, progress=False)
    curve = [(c["step"], round(c["recall"], 3)) for c in r["curve"] if "recall" in c]
    return {"name": name, "family": fam, "seed": seed, "lr": lr, "a_range": a_range, "bs": bs,
            "steps": r["steps"], "recall": r["valid"]["recall"], "wall_s": round(time.time() - t, 1), "curve": curve}

if __name__ == "__main__":
    out = sys.argv[1]
    jobs = []
    for s in range(0, 8):
        jobs += [("gdn_final", "gated_deltanet", s, 1e-3, (0.5, 2.0), 64, 500),
                 ("dn_final", "delta_net", s, 1e-3, None, 64, 500)]
    with ProcessPoolExecutor(16) as ex, open(out, "w") as f:
        for fut in as_completed([ex.submit(one, j) for j in jobs]):
            r = fut.result()
            f.write(json.dumps(r) + "\n"); f.flush()
            print(r["name"], r["seed"], r["steps"], r["recall"], r["wall_s"], flush=True)
