"""The two GPU routes of lapr.profiling.spectrum_gpu (gram: fp64 Gram + tridiagonalisation; bidiag:
fp32 Householder bidiagonalisation), each ending in Sturm bisection, against float64 LAPACK.

Bound (module doc): |sigma - sigma_lapack| <= 1e-4 * sigma_1 for every singular value; threshold
ranks equal except on matrices with a reference sigma within 1e-4 * sigma_1 of eps * sigma_1
(`near_threshold`). The PyTorch path runs here; the Triton kernels run on CPU under
TRITON_INTERPRET=1 in a subprocess (the variable must be set before triton is imported) and on
CUDA in the gpu-marked test.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from lapr.profiling import spectrum_gpu as sg
from lapr.profiling.metrics import rank_table, singular_values, spectrum_table, threshold_rank

TOL = sg.TOLERANCE
EPS = 1e-4


def with_spectrum(sigma, m, n, seed, batch=2):
    """[batch, m, n] fp32 states with singular values `sigma` (then zeros), random frames."""
    gen = torch.Generator().manual_seed(seed)
    r = len(sigma)
    u, _ = torch.linalg.qr(torch.randn(batch, m, r, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(batch, n, r, generator=gen, dtype=torch.float64))
    return ((u * torch.as_tensor(sigma, dtype=torch.float64)) @ v.transpose(-1, -2)).float()


def lowrank(m, n, r, seed, batch=2):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, m, r, generator=gen) @ torch.randn(batch, r, n, generator=gen)


CASES = {
    "rank1": lambda: lowrank(128, 128, 1, 0),
    "rank5": lambda: lowrank(128, 128, 5, 1),
    "rank64": lambda: lowrank(128, 128, 64, 2),
    "rect64x128": lambda: lowrank(64, 128, 64, 3),
    "rect128x40": lambda: lowrank(128, 40, 40, 4),
    "zero": lambda: torch.zeros(2, 128, 128),
    "decades": lambda: with_spectrum(np.logspace(0, -6, 128), 128, 128, 5),  # sigma 1 .. 1e-6
    "tiny_scale": lambda: lowrank(32, 32, 8, 6) * 1e-30,  # scaling keeps G's entries O(n)
}


def check_bound(sv, ref, eps=EPS):
    assert sv.shape == ref.shape
    top = ref[..., :1]
    assert ((sv.double() - ref).abs() <= TOL * top).all(), float(((sv.double() - ref).abs() / top).max())
    near = sg.near_threshold(ref, eps)
    differ = threshold_rank(sv.double(), eps) != threshold_rank(ref, eps)
    assert not (differ & ~near).any()


@pytest.mark.parametrize("route", sg.ROUTES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_route_matches_lapack(case, route):
    states = CASES[case]()
    ref = torch.linalg.svdvals(states.double())
    sv = sg.fast_singular_values(states, route=route, backend="torch")
    assert sv.dtype == torch.float32
    check_bound(sv, ref)
    assert (sv[..., :-1] >= sv[..., 1:]).all()  # descending
    assert (sv >= 0).all()
    if case == "zero":
        assert (sv == 0).all()
    # the bound is far from tight: fp64 Gram or fp32 reflections + 32 bisection steps give ~1e-7
    assert float(((sv.double() - ref).abs() / ref[..., :1].clamp_min(1e-300)).max()) < 1e-6


@pytest.mark.parametrize("route", sg.ROUTES)
def test_rank_of_exact_low_rank(route):
    states = with_spectrum([3.0, 2.0, 1.0, 0.5, 0.25], 96, 64, seed=7, batch=3)
    sv = sg.fast_singular_values(states, route=route, backend="torch")
    assert threshold_rank(sv, EPS).tolist() == [5, 5, 5]
    torch.testing.assert_close(sv[:, :5].double(), torch.tensor([3.0, 2.0, 1.0, 0.5, 0.25]).expand(3, 5).double(),
                               rtol=0, atol=1e-5)


def test_float64_in_float64_out_and_leading_dims():
    states = lowrank(12, 9, 4, 8, batch=6).double().reshape(2, 3, 12, 9)
    sv = sg.gram_singular_values(states, backend="torch")
    assert sv.dtype == torch.float64 and sv.shape == (2, 3, 9)
    torch.testing.assert_close(sv, torch.linalg.svdvals(states), rtol=0, atol=1e-7 * float(sv.max()))


def test_bidiag_float64_and_leading_dims():
    """float64 in, float64 out, at the route's fp32 working accuracy (~1e-7 sigma_1); m < n transposed."""
    states = lowrank(12, 19, 4, 8, batch=6).double().reshape(2, 3, 12, 19)
    sv = sg.bidiag_singular_values(states, backend="torch")
    assert sv.dtype == torch.float64 and sv.shape == (2, 3, 12)
    torch.testing.assert_close(sv, torch.linalg.svdvals(states), rtol=0, atol=1e-6 * float(sv.max()))


def test_bidiagonalize_is_a_bidiagonal_of_the_same_matrix():
    """B = U^T S V: the upper bidiagonal (d, f) has S's singular values (fp64 input: to ~1e-13)."""
    s = lowrank(10, 7, 7, 11, batch=3).double()
    d, f = sg.bidiagonalize(s)
    assert (f[:, -1] == 0).all()
    b = torch.diag_embed(d) + torch.diag_embed(f[:, :-1], offset=1)
    torch.testing.assert_close(torch.linalg.svdvals(b), torch.linalg.svdvals(s), rtol=0, atol=1e-12)
    dd, e2 = sg.bidiagonal_gram(d, f)           # B^T B as (diagonal, squared off-diagonal)
    btb = b.transpose(-1, -2) @ b
    torch.testing.assert_close(dd, torch.diagonal(btb, dim1=-2, dim2=-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(e2[:, 1:], torch.diagonal(btb, offset=1, dim1=-2, dim2=-1).square(),
                               rtol=1e-12, atol=1e-12)
    assert (e2[:, 0] == 0).all()
    with pytest.raises(ValueError, match="m >= n"):
        sg.bidiagonalize(s.transpose(-1, -2))


def test_bisection_steps_bound():
    """Fewer steps, coarser sigma: the docstring's sqrt(3) sigma_1 / 2^(k+1) bound holds at k = 8."""
    states = lowrank(24, 24, 24, 9, batch=4)
    ref = torch.linalg.svdvals(states.double())
    sv = sg.gram_singular_values(states, steps=8, backend="torch").double()
    err = ((sv - ref).abs() / ref[..., :1]).max()
    assert 1e-5 < err <= 3**0.5 / 2**9 + 1e-6


def test_near_threshold_helper():
    ref = torch.tensor([[1.0, 0.5, 1.5e-4, 0.0],     # 1.5e-4 - 1e-4 = 5e-5 <= 1e-4: near
                        [1.0, 0.5, 3e-4, 0.0],       # 2e-4 away: not near
                        [2.0, 1.0, 4e-4, 0.0],       # eps*sigma_1 = 2e-4, |4e-4 - 2e-4| = 2e-4 = tol*sigma_1: near
                        [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # all-zero: never near
    # the zeros of row 1 are 1e-4 from the threshold, exactly on the bound: near as well
    assert sg.near_threshold(ref, 1e-4).tolist() == [True, True, True, False]
    assert sg.near_threshold(ref, 1e-4, tol=5e-5).tolist() == [True, False, False, False]
    c = sg.compare(ref, ref, 1e-4)
    assert c["max_rel_error"] == 0 and c["rank_mismatch_far"] == 0 and c["near_threshold"] == 3


def test_bad_input():
    with pytest.raises(ValueError, match="backend"):
        sg.gram_singular_values(torch.zeros(2, 3, 3), backend="cusolver")
    with pytest.raises(ValueError, match="steps"):
        sg.gram_singular_values(torch.zeros(2, 3, 3), steps=0)
    with pytest.raises(ValueError, match="d_k, d_v"):
        sg.gram_singular_values(torch.zeros(3))
    with pytest.raises(ValueError, match="method"):
        singular_values(torch.zeros(2, 3, 3), method="jacobi")
    with pytest.raises(ValueError, match="route"):
        sg.fast_singular_values(torch.zeros(2, 3, 3), route="jacobi")
    with pytest.raises(ValueError, match="steps"):
        sg.bidiag_singular_values(torch.zeros(2, 3, 3), steps=0)
    assert sg.bidiag_singular_values(torch.zeros(0, 4, 5)).shape == (0, 4)
    assert sg.gram_singular_values(torch.zeros(0, 4, 5)).shape == (0, 4)


def test_gpu_methods_are_the_routes():
    from lapr.profiling.metrics import GPU_METHODS

    assert GPU_METHODS == sg.ROUTES


def test_singular_values_methods():
    states = lowrank(20, 16, 6, 10, batch=3)
    lap = singular_values(states)
    assert torch.equal(singular_values(states, "auto"), lap)  # auto = lapack on CPU tensors
    gram = singular_values(states.half(), "gram")
    assert gram.dtype == torch.float32
    check_bound(singular_values(states, "gram"), torch.linalg.svdvals(states.double()))
    check_bound(singular_values(states, "bidiag"), torch.linalg.svdvals(states.double()))


# ------------------------------------------------------------------------------------------------
# states captured from a trained checkpoint

def trained_states():
    """A tiny DeltaNet trained for 30 AdamW steps on Gutenberg text (the embedded checkpoints'
    weights are not in the repository; tests/pruning/test_scale.py trains the same way), and its
    states on held-out text at 12 positions: {layer: [B, H, P, 16, 16]}."""
    from lapr.data import encode_corpus, load_tokenizer, train_batches
    from lapr.models import build_model
    from lapr.profiling.capture import capture_states, log_positions

    ids = encode_corpus("gutenberg_valid", load_tokenizer("gutenberg-bpe-8k"), max_chars=100_000, progress=False)
    spec = dict(family="delta_net", hidden_size=32, num_layers=2, num_heads=2, head_k_dim=16, head_v_dim=16,
                vocab_size=8192, mlp_ratio=2, use_gate=True)
    model = build_model(spec, seed=0).float()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = train_batches(ids, 4, 65, seed=0)
    model.train()
    for _ in range(30):
        x = next(batches)
        logits = model(x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tokens = torch.from_numpy(ids[2000:2000 + 2 * 96].astype("int64")).reshape(2, 96)
    positions = log_positions(96, 12)
    return capture_states(model, tokens, positions), positions


@pytest.fixture(scope="module")
def captured():
    return trained_states()


def test_rank_table_gram_equals_lapack_on_trained_states(captured):
    """Rank tables computed by the gram (GPU) path equal the LAPACK ones within the stated bound."""
    states, positions = captured
    per_layer = {layer: s[0].transpose(0, 1) for layer, s in states.items()}  # [P, H, dk, dv]
    lap = rank_table(per_layer, positions, eps=EPS)
    gram = rank_table(per_layer, positions, eps=EPS, method="gram")
    assert list(gram.columns) == list(lap.columns) and len(gram) == len(lap)
    for col in ("position", "layer", "head", "bound"):
        assert (gram[col] == lap[col]).all()
    ref = torch.linalg.svdvals(torch.stack([s for s in per_layer.values()]).double())  # [L, P, H, r]
    near = sg.near_threshold(ref, EPS).permute(1, 0, 2).reshape(-1).numpy()  # rows are (position, layer, head)
    assert ((gram["threshold_rank"] == lap["threshold_rank"]) | near).all()
    assert (lap["threshold_rank"] > 1).any()  # trained states are not trivially rank 1
    # sigma within 1e-4 sigma_1 bounds the norms by 1e-4 relative and the ranks by a few 1e-4
    # (entropy rank sums 16 sigma errors); the real errors are ~1e-7
    for col, rtol in (("spectral", 1e-4), ("frobenius", 1e-4), ("stable_rank", 5e-4), ("entropy_rank", 5e-3)):
        np.testing.assert_allclose(gram[col], lap[col], rtol=rtol, err_msg=col)
    spec_lap = spectrum_table(per_layer, positions, keep=3)
    spec_gram = spectrum_table(per_layer, positions, keep=3, method="gram")
    top = spec_lap.groupby(["position", "layer", "head"])["sigma"].transform("max")
    assert ((spec_gram["sigma"] - spec_lap["sigma"]).abs() <= TOL * top).all()


@pytest.mark.parametrize("route", sg.ROUTES)
def test_profile_stage_batched_tables_equal_lapack_ones(captured, route):
    """The profile stage's batched path (every state of a context in one singular-value call, samples
    folded into the head axis; what CUDA states take) gives the per-(sample, layer) LAPACK tables:
    same rows in the same order, ranks equal away from the threshold, sigma within the bound."""
    from lapr.profiling.stage import _metrics

    states, positions = captured                                        # {layer: [B, H, P, dk, dv]}
    base = {"eps": EPS, "eps_sensitivity": [1e-3, 1e-2], "spectrum_positions": 3}
    ranks_lap, spec_lap = _metrics(states, positions, {**base, "svd": "lapack"}, "ctx")
    ranks_bat, spec_bat = _metrics(states, positions, {**base, "svd": route}, "ctx")
    assert len(ranks_bat) == len(ranks_lap) == next(iter(states.values())).shape[0]
    ref = {layer: torch.linalg.svdvals(s.double()) for layer, s in states.items()}   # [B, H, P, r]
    for b, (lap, bat) in enumerate(zip(ranks_lap, ranks_bat)):
        assert list(bat.columns) == list(lap.columns)
        keys = ["position", "layer", "head", "bound", "context", "sample"]
        pd.testing.assert_frame_equal(bat[keys], lap[keys])
        near = np.array([bool(sg.near_threshold(ref[r.layer][b, r.head, positions.index(r.position)], EPS))
                         for r in lap.itertuples()])
        assert ((bat["threshold_rank"] == lap["threshold_rank"]) | near).all()
        np.testing.assert_allclose(bat["stable_rank"], lap["stable_rank"], rtol=5e-4)
    for lap, bat in zip(spec_lap, spec_bat):
        keys = ["position", "layer", "head", "index", "context", "sample"]
        pd.testing.assert_frame_equal(bat[keys], lap[keys])
        top = lap.groupby(["position", "layer", "head"])["sigma"].transform("max")
        assert ((bat["sigma"] - lap["sigma"]).abs() <= TOL * top).all()


# ------------------------------------------------------------------------------------------------
# the Triton kernels

def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


INTERPRET_SCRIPT = textwrap.dedent("""
    import json, torch
    from lapr.profiling import spectrum_gpu as sg
    out = {}
    for name, (m, n, r) in {"square": (16, 16, 5), "rect": (9, 20, 9), "full": (12, 12, 12),
                            "tiny": (2, 3, 2), "one": (1, 1, 1)}.items():
        gen = torch.Generator().manual_seed(m * n + r)
        s = torch.randn(3, m, r, generator=gen) @ torch.randn(3, r, n, generator=gen)
        s[1] = 0  # an all-zero state among them
        g, _ = sg.gram(s)
        d_t, e_t = sg.tridiagonalize(g)
        d_k, e_k = sg.tridiagonalize_triton(g)
        ref = torch.linalg.svdvals(s.double())
        sv_k = sg.gram_singular_values(s, backend="triton")
        sv_t = sg.gram_singular_values(s, backend="torch")
        sturm_k = sg.sturm_bisection_triton(d_t, e_t)
        sturm_t = sg.sturm_bisection(d_t, e_t)
        tall = s if m >= n else s.transpose(-1, -2)
        bd_t, bf_t = sg.bidiagonalize(tall.float())
        bd_k, bf_k = sg.bidiagonalize_triton(tall)
        bi_k = sg.bidiag_singular_values(s, backend="triton")
        bi_t = sg.bidiag_singular_values(s, backend="torch")
        top = ref[:, :1].clamp_min(1e-300)
        out[name] = {"tridiag": float(max((d_t - d_k).abs().max(), (e_t - e_k).abs().max())),
                     "sturm": float((sturm_k - sturm_t).abs().max()),
                     "vs_lapack": float(((sv_k.double() - ref).abs() / ref[:, :1].clamp_min(1e-300)).max()),
                     "zero": float(sv_k[1].abs().max()),
                     # full rank only: in a rank-deficient tail the reflections act on rounding noise
                     "bidiag": float(max((bd_t - bd_k).abs().max(), (bf_t - bf_k).abs().max()) / tall.abs().max())
                     if r == min(m, n) else 0.0,
                     "bidiag_vs_torch": float(((bi_k.double() - bi_t.double()).abs() / top).max()),
                     "bidiag_vs_lapack": float(((bi_k.double() - ref).abs() / top).max()),
                     "bidiag_zero": float(bi_k[1].abs().max())}
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.skipif(not _triton_importable(), reason="triton is not importable")
def test_triton_kernels_interpreted():
    """The Triton kernels' logic on CPU: TRITON_INTERPRET=1 is read when triton is imported, so the
    kernels run in a fresh interpreter with it set."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", INTERPRET_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    for name, r in result.items():
        assert r["tridiag"] < 1e-12, (name, r)  # same reflections, entries O(n)
        assert r["sturm"] == 0.0, (name, r)      # same operations in the same order, fp64
        assert r["vs_lapack"] <= TOL, (name, r)
        assert r["zero"] == 0.0, (name, r)
        assert r["bidiag"] < 1e-5, (name, r)            # same reflections in fp32, another summation order
        assert r["bidiag_vs_torch"] < 1e-6, (name, r)
        assert r["bidiag_vs_lapack"] <= TOL, (name, r)
        assert r["bidiag_zero"] == 0.0, (name, r)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gram_on_cuda_matches_lapack():
    states = sg.synthetic_states(600, 128, seed=1).cuda()
    ref = torch.linalg.svdvals(states.cpu().double())
    sv = sg.gram_singular_values(states, backend="triton")
    assert sv.is_cuda
    check_bound(sv.cpu(), ref)
    torch_tridiag = sg.gram_singular_values(states[:64], backend="triton", tridiag="torch")
    check_bound(torch_tridiag.cpu(), ref[:64])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bidiag_on_cuda_matches_lapack():
    """The Triton bidiagonaliser at the gpu profile's shapes: 128 x 128 and a pruned 64 x 128."""
    for d_k in (128, 64):
        states = sg.synthetic_states(600, 128, seed=2)[:, :d_k].contiguous().cuda()
        ref = torch.linalg.svdvals(states.cpu().double())
        sv = sg.bidiag_singular_values(states, backend="triton")
        assert sv.is_cuda and sv.shape == (600, d_k)
        check_bound(sv.cpu(), ref)
        assert float(((sv.cpu().double() - ref).abs() / ref[:, :1]).max()) < 1e-5  # ~1e-7 expected
    auto = singular_values(states, "auto")
    assert torch.equal(auto.cpu(), sg.fast_singular_values(states, route=sg.DEFAULT_ROUTE).cpu())


# ------------------------------------------------------------------------------------------------
# benchmark driver, CPU side

def test_benchmark_driver_small_on_cpu(tmp_path):
    sg.main(["--out", str(tmp_path), "--device", "cpu", "--shape", "small", "--repeats", "1",
             "--lapack-subset", "10", "--model", "run"])
    table = pd.read_csv(tmp_path / "spectrum_timing.csv")
    assert {"lapack_fp64_cpu", "lapack_fp32_cpu", "gram_torch", "gram_torch+metrics", "bidiag_torch"} <= set(table["method"])
    assert table.set_index("method").loc["bidiag_torch", "max_rel_error"] <= TOL
    gram = table.set_index("method").loc["gram_torch"]
    assert gram["max_rel_error"] <= TOL and gram["rank_mismatch_far"] == 0 and gram["n_matrices"] == 10
    lapack = table.set_index("method").loc["lapack_fp64_cpu"]
    assert lapack["n_timed"] == 10 and lapack["seconds_per_context"] > lapack["seconds"]  # extrapolated
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["stage"] == "spectrum_gpu_benchmark" and prov["settings"]["shape"] == "small"
    assert prov["model"].get("error") is None, prov["model"]
    assert prov["model"]["n_states"] == 2 * 2 * 2 * 8  # layers x batch x heads x positions
    assert prov["model"]["stage_metrics_s"] > 0 and prov["model"]["profile_over_forward_bidiag"] > 0


@pytest.mark.parametrize("run", ["small", "recorded"])
def test_spectrum_timing_figure(tmp_path, run):
    """`--figure RUN_DIR` draws a benchmark directory: a fresh CPU one, and the recorded H200 run."""
    from pathlib import Path

    if run == "small":
        run_dir = tmp_path / "run"
        sg.main(["--out", str(run_dir), "--device", "cpu", "--shape", "small", "--repeats", "1",
                 "--lapack-subset", "10", "--model", "run"])
    else:
        run_dir = Path(__file__).resolve().parents[2] / "results" / "gpu_speed" / "spectrum_bidiag"
        prov = json.loads((run_dir / "provenance.json").read_text())
        assert prov["model"]["default_route"] == sg.DEFAULT_ROUTE  # the default is the measured faster route
        assert prov["model"]["profile_over_forward_bidiag"] < prov["model"]["profile_over_forward_gram"]
    sg.main(["--figure", str(run_dir), "--out", str(tmp_path / "fig")])
    for ext in ("png", "pdf"):
        assert (tmp_path / "fig" / f"spectrum_timing.{ext}").stat().st_size > 1000
