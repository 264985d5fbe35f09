"""lapr's PyTorch chunk_bwd_dqkwg (the fla #640 stand-in) and where for_training installs it.

CPU: the gradients are checked against autograd through a plain float64 transcription of the
chunk-local forward map the kernel differentiates (independent of lapr's transcription). GPU
(`-m gpu`): fla's chunk_gated_delta_rule with lapr's dqkwg patched in against lapr's reference op,
and lapr's dqkwg against fla's own kernel where fla runs it.
"""
import math
import re
from pathlib import Path

import pytest
import torch

from lapr import backends
from lapr.backends import dqkwg_routed, dqkwg_tiled, lapr_chunk_bwd_dqkwg as dqkwg

LN2 = math.log(2.0)
BT = 64


def chunk_forward(q, k, v, g2, h, scale, BT=BT):
    """The map chunk_bwd_kernel_dqkwg differentiates, chunk by chunk, for independent start states.

    q, k [B, T, HV, K] (already expanded to value heads), v [B, T, HV, V], g2 [B, T, HV] the
    in-chunk cumulative gate in log2 units, h [B, NT, HV, K, V] the state before each chunk.
    Returns o [B, T, HV, V] and the states after each chunk [B, NT, HV, K, V]:
      o_c = scale * (exp2(g)[:, None] * q_c @ h_c + tril(q_c k_c^T * exp2(g_i - g_j)) @ v_c)
      h_{c+1} = exp2(g_last) h_c + k_c^T (exp2(g_last - g)[:, None] * v_c)
    """
    T = q.shape[1]
    outs, nexts = [], []
    for c, t0 in enumerate(range(0, T, BT)):
        sl = slice(t0, min(t0 + BT, T))
        qc, kc, vc = (x[:, sl].transpose(1, 2) for x in (q, k, v))   # [B, HV, n, D]
        gc = g2[:, sl].transpose(1, 2)                                # [B, HV, n]
        hc = h[:, c]
        n = gc.shape[-1]
        glast = gc[..., -1:]
        mask = torch.ones(n, n, dtype=torch.bool).tril()
        A = (qc @ kc.transpose(-1, -2)) * torch.exp2(gc[..., :, None] - gc[..., None, :])
        A = torch.where(mask, A, torch.zeros_like(A))
        o = scale * (torch.exp2(gc)[..., None] * (qc @ hc) + A @ vc)
        hn = torch.exp2(glast)[..., None] * hc + kc.transpose(-1, -2) @ (torch.exp2(glast - gc)[..., None] * vc)
        outs.append(o.transpose(1, 2))
        nexts.append(hn)
    return torch.cat(outs, 1), torch.stack(nexts, 1)


def make(seed, T, H, HV, K=12, V=20, B=2, dtype=torch.float64, gate="g", state_v_first=False):
    gen = torch.Generator().manual_seed(seed)

    def r(*s, sd=1.0):
        return (torch.randn(*s, generator=gen, dtype=torch.float64) * sd).to(dtype)
    NT = -(-T // BT)
    q, k = r(B, T, H, K), r(B, T, H, K, sd=0.5)
    v, do, dv = r(B, T, HV, V), r(B, T, HV, V), r(B, T, HV, V)
    w = r(B, T, HV, K)
    h, dh = r(B, NT, HV, K, V), r(B, NT, HV, K, V)
    g_nat = g_gamma = None
    if gate == "g":  # natural-log per-token decay, cumulated inside each chunk as fla does
        tok = -torch.rand(B, T, HV, generator=gen, dtype=torch.float64) * 0.3
        g_nat = torch.cat([tok[:, t:t + BT].cumsum(1) for t in range(0, T, BT)], 1).to(dtype)
    elif gate == "gamma":
        g_gamma = (-torch.rand(HV, generator=gen, dtype=torch.float64) * 0.2 / LN2).to(dtype)
    if state_v_first:
        h, dh = h.transpose(-1, -2).contiguous(), dh.transpose(-1, -2).contiguous()
    return dict(q=q, k=k, v=v, do=do, dv=dv, w=w, h=h, dh=dh, g_nat=g_nat, g_gamma=g_gamma)


def reference(x, scale, state_v_first):
    """Autograd (float64) of <o, do> + <h_next, dh> through chunk_forward. dg is taken w.r.t. the
    natural-log cumulative gate g_nat = g2 * ln 2: that is the kernel's dg (it differentiates
    exp2 without the ln 2 factor), before fla's reverse cumsum."""
    d = {k: (v.double() if torch.is_tensor(v) else v) for k, v in x.items()}
    H, HV = d["q"].shape[2], d["v"].shape[2]
    B, T = d["q"].shape[:2]
    h, dh = d["h"], d["dh"]
    if state_v_first:
        h, dh = h.transpose(-1, -2), dh.transpose(-1, -2)
    q, k = d["q"].clone().requires_grad_(), d["k"].clone().requires_grad_()
    leaves = [q, k]
    if d["g_nat"] is not None:
        g_nat = d["g_nat"].clone().requires_grad_()
        leaves.append(g_nat)
        g2 = g_nat / LN2
    elif d["g_gamma"] is not None:
        pos = torch.arange(T, dtype=torch.float64) % BT + 1
        g2 = (d["g_gamma"][None, None, :] * pos[None, :, None]).expand(B, T, HV)
    else:
        g2 = torch.zeros(B, T, HV, dtype=torch.float64)
    qe, ke = q.repeat_interleave(HV // H, 2), k.repeat_interleave(HV // H, 2)
    o, hn = chunk_forward(qe, ke, d["v"], g2, h, scale)
    loss = (o * d["do"]).sum() + (hn * dh).sum()
    grads = torch.autograd.grad(loss, leaves)
    dw = torch.cat([-(d["dv"][:, t:t + BT].transpose(1, 2) @ h[:, c].transpose(-1, -2)).transpose(1, 2)
                    for c, t in enumerate(range(0, T, BT))], 1)
    return grads[0], grads[1], dw, (grads[2] if len(grads) > 2 else None)


def call(x, scale, state_v_first, fn=dqkwg, **kw):
    g2 = None if x["g_nat"] is None else (x["g_nat"].double() / LN2).to(x["g_nat"].dtype)
    return fn(x["q"], x["k"], x["v"], x["do"], x["h"], x["dh"], w=x["w"], g=g2,
              g_gamma=x["g_gamma"], dv=x["dv"], scale=scale, state_v_first=state_v_first, **kw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("gate", ["g", "gamma", "none"])
@pytest.mark.parametrize("svf", [False, True], ids=["kv", "vk"])
@pytest.mark.parametrize("H,HV", [(2, 2), (2, 4)], ids=["mha", "grouped"])
@pytest.mark.parametrize("T", [128, 100])
def test_matches_autograd_of_the_chunk_map(T, H, HV, svf, gate, dtype):
    x = make(hash((T, H, HV, svf, gate)) % 1000, T, H, HV, dtype=dtype, gate=gate, state_v_first=svf)
    scale = 12 ** -0.5
    dq, dk, dw, dg = call(x, scale, svf)
    rq, rk, rw, rg = reference(x, scale, svf)
    assert dq.dtype == dk.dtype == dw.dtype == dtype
    assert dq.shape == x["q"].shape and dk.shape == x["k"].shape and dw.shape == x["w"].shape
    assert all(t.is_contiguous() for t in (dq, dk, dw, dg) if t is not None)  # fla's callers .view them
    tol = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(dq.double(), rq, **tol)
    torch.testing.assert_close(dk.double(), rk, **tol)
    torch.testing.assert_close(dw.double(), rw, **tol)
    if gate == "g":
        assert dg.dtype == torch.float32 and dg.shape == x["g_nat"].shape
        # dg is float32 whatever the inputs (as fla allocates it)
        torch.testing.assert_close(dg.double(), rg, atol=1e-4, rtol=1e-5)
    else:
        assert dg is None


def test_dg_reverse_cumsum_is_the_per_token_gate_gradient():
    # fla's next step: reverse cumsum of dg inside each chunk = gradient w.r.t. the per-token gate
    x = make(3, 100, 2, 2)
    tok = torch.cat([x["g_nat"][:, :1], x["g_nat"].diff(dim=1)], 1)
    tok[:, BT] = x["g_nat"][:, BT]  # chunk starts: the cumsum restarts
    tok = tok.clone().requires_grad_()
    g_nat = torch.cat([tok[:, t:t + BT].cumsum(1) for t in range(0, 100, BT)], 1)
    h = x["h"]
    o, hn = chunk_forward(x["q"], x["k"], x["v"], g_nat / LN2, h, 0.3)
    (want,) = torch.autograd.grad((o * x["do"]).sum() + (hn * x["dh"]).sum(), tok)
    *_, dg = call(x, 0.3, False)
    got = torch.cat([dg[:, t:t + BT].flip(1).cumsum(1).flip(1) for t in range(0, 100, BT)], 1)
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-5)


def test_without_w_and_varlen_equals_separate_sequences():
    bounds = [0, 100, 164, 200]
    x = make(7, 200, 2, 4, B=1)
    pieces, c = [], 0
    NTs = [-(-(b - a) // BT) for a, b in zip(bounds[:-1], bounds[1:])]
    h = torch.randn(1, sum(NTs), 4, 12, 20, dtype=torch.float64)
    dh = torch.randn_like(h)
    for (a, b), nt in zip(zip(bounds[:-1], bounds[1:]), NTs):
        sl = slice(a, b)
        y = {n: (t[:, sl] if torch.is_tensor(t) and t.dim() >= 3 and n not in ("h", "dh") else t)
             for n, t in x.items()}
        y["h"], y["dh"] = h[:, c:c + nt], dh[:, c:c + nt]
        pieces.append(call(y, 0.25, False))
        c += nt
    x["h"], x["dh"] = h, dh
    got = call(x, 0.25, False, cu_seqlens=torch.tensor(bounds))
    for i in range(4):
        torch.testing.assert_close(got[i], torch.cat([p[i] for p in pieces], 1), atol=1e-12, rtol=0)
    dq, dk, dw, dg = dqkwg(x["q"], x["k"], x["v"], x["do"], x["h"], x["dh"], g=None, scale=0.25,
                           cu_seqlens=torch.tensor(bounds))
    assert dw is None and dg is None
    assert dq.shape == x["q"].shape and dk.shape == x["k"].shape


# --- selection: installed only where fla refuses its own ------------------------------------

def _fla_source_callers():
    """Modules under fla/ops whose source imports chunk_bwd_dqkwg from fla.ops.common.chunk_o."""
    import fla

    root = Path(fla.__file__).parent
    pat = re.compile(r"from fla\.ops\.common\.chunk_o import[^\n]*\bchunk_bwd_dqkwg\b")
    mods = set()
    for f in (root / "ops").rglob("*.py"):
        if pat.search(f.read_text()):
            mods.add("fla." + ".".join(f.relative_to(root).with_suffix("").parts))
    return mods


def test_every_fla_caller_is_patched():
    callers = _fla_source_callers()
    assert "fla.ops.gated_delta_rule.chunk" in callers
    assert callers <= set(backends.DQKWG_MODULES)


@pytest.fixture
def fla_flags(monkeypatch):
    """Set fla's own #640 condition (the flags chunk_o tests) and the TileLang escape hatch."""
    chunk_o = backends.owner("fla.ops.common.chunk_o")

    def set_(hopper, t34, t371, tilelang=False):
        monkeypatch.setattr(chunk_o, "IS_NVIDIA_HOPPER", hopper)
        monkeypatch.setattr(chunk_o, "TRITON_ABOVE_3_4_0", t34)
        monkeypatch.setattr(chunk_o, "TRITON_ABOVE_3_7_1", t371)
        monkeypatch.setattr(backends, "_fla_backend_takes_dqkwg", lambda: tilelang)
    yield set_
    backends.use_lapr_dqkwg(False)
    backends.use_cpu_backend(False)
    backends.auto()


@pytest.mark.parametrize("flags,broken", [
    ((True, True, False), True),             # Hopper, 3.4 <= Triton < 3.7.1: fla refuses
    ((True, True, True), False),             # Triton >= 3.7.1
    ((True, False, False), False),           # Triton < 3.4
    ((False, True, False), False),           # not Hopper
    ((True, True, False, True), False),      # fla's TileLang backend takes the call
])
def test_broken_is_flas_condition(fla_flags, flags, broken):
    fla_flags(*flags)
    assert backends.fla_gated_backward_broken() is broken


def _model(family):
    from lapr.models import build_model

    return build_model(dict(family=family, hidden_size=32, num_layers=1, num_heads=2,
                            head_k_dim=8, head_v_dim=8, vocab_size=50))


@pytest.mark.parametrize("family,flags,label", [
    ("gated_deltanet", (True, True, False), "fla+lapr_dqkwg"),
    ("gated_deltanet", (True, True, True), "fla"),
    ("gated_deltanet", (False, True, False), "fla"),
    ("delta_net", (True, True, False), "fla"),
])
def test_for_training_installs_only_where_fla_refuses(fla_flags, monkeypatch, family, flags, label):
    model = _model(family)
    backends.use_cpu_backend(False)
    monkeypatch.setattr(backends, "auto", lambda: "fla")  # pretend CUDA
    fla_flags(*flags)
    assert backends.for_training(model) == label
    installed = label == "fla+lapr_dqkwg"
    assert backends.lapr_dqkwg_active() is installed
    for path in backends.DQKWG_MODULES:
        assert (backends.owner(path).chunk_bwd_dqkwg is dqkwg_routed) is installed
    # fla's own GDN op stays (no whole-op swap)
    assert backends.owner("fla.layers.gated_deltanet").chunk_gated_delta_rule is not backends.delta_rule
    backends.use_lapr_dqkwg(False)
    assert not backends.lapr_dqkwg_active()
    assert backends.owner("fla.ops.delta_rule.chunk").chunk_bwd_dqkwg is \
        backends.owner("fla.ops.common.chunk_o").chunk_bwd_dqkwg


def test_whole_op_fallback_by_env(fla_flags, monkeypatch):
    monkeypatch.setenv("LAPR_GDN_TRAINING", "lapr_op")
    monkeypatch.setattr(backends, "auto", lambda: "fla")
    backends.use_cpu_backend(False)
    fla_flags(True, True, False)
    assert backends.for_training(_model("gated_deltanet")) == "fla+lapr_gated_delta_rule"
    assert backends.owner("fla.layers.gated_deltanet").chunk_gated_delta_rule is backends.delta_rule
    assert not backends.lapr_dqkwg_active()


def test_routing_keeps_fla_for_ungated_calls(fla_flags, monkeypatch):
    fla_flags(True, True, False)
    monkeypatch.setenv("LAPR_GDN_DQKWG", "torch")
    seen = []
    backends.use_lapr_dqkwg(True)
    monkeypatch.setitem(backends._ORIGINALS, backends.DQKWG[0], lambda *a, **kw: seen.append(kw["g"]) or "fla")
    x = make(1, 64, 2, 2)
    assert call(x, 0.5, False, fn=dqkwg_routed) is not None and seen == []  # gated -> lapr
    x["g_nat"] = None
    assert call(x, 0.5, False, fn=dqkwg_routed) == "fla" and seen == [None]  # ungated -> fla


# --- fla's own kernel at tile widths Hopper compiles correctly (lapr.backends.dqkwg_tiled) --------

@pytest.mark.parametrize("d,want", [(8, 16), (16, 16), (32, 32), (48, 32), (64, 32), (100, 128), (128, 128),
                                    (256, 128)])
def test_tiles_avoid_the_miscompiled_width(d, want):
    assert dqkwg_tiled.tile(d) == want
    assert dqkwg_tiled.eligible(d, 128) is (want == 128)


@pytest.mark.parametrize("mode,verified,impl", [("auto", True, "tiled"), ("auto", False, "torch"),
                                                 ("torch", True, "torch")])
def test_gated_calls_take_the_tiled_kernel_only_where_checked(fla_flags, monkeypatch, mode, verified, impl):
    fla_flags(True, True, False)
    monkeypatch.setenv("LAPR_GDN_DQKWG", mode)
    seen = []
    monkeypatch.setattr(dqkwg_tiled, "_VERIFIED", {})
    monkeypatch.setattr(dqkwg_tiled, "chunk_bwd_dqkwg_tiled", lambda *a, **kw: seen.append("tiled") or "tiled")
    monkeypatch.setattr(backends, "lapr_chunk_bwd_dqkwg", lambda *a, **kw: seen.append("torch") or "torch")
    monkeypatch.setattr(dqkwg_tiled, "verified", lambda K, V, dtype, device, _v=verified:
                        _v and dqkwg_tiled.os.environ["LAPR_GDN_DQKWG"] != "torch")
    x = make(1, 64, 2, 2)
    assert call(x, 0.5, False, fn=dqkwg_routed) == impl and seen == [impl]


def test_verified_refuses_a_wrong_kernel_and_caches(monkeypatch):
    monkeypatch.setattr(dqkwg_tiled, "_VERIFIED", {})
    monkeypatch.setenv("LAPR_GDN_DQKWG", "auto")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # lets the CPU stand for a device with kernels
    calls = []

    def wrong(**x):  # the #640 symptom: dk and dg off by O(1)
        calls.append(1)
        dq, dk, dw, dg = dqkwg(**x)
        return dq, dk * 1.5, dw, dg + 1
    monkeypatch.setattr(dqkwg_tiled, "chunk_bwd_dqkwg_tiled", wrong)
    assert not dqkwg_tiled.verified(128, 128, torch.float32, "cpu")
    assert not dqkwg_tiled.verified(128, 128, torch.float32, "cpu") and calls == [1]  # checked once
    monkeypatch.setattr(dqkwg_tiled, "chunk_bwd_dqkwg_tiled", lambda **x: dqkwg(**x))
    assert dqkwg_tiled.verified(128, 100, torch.float32, "cpu")
    assert not dqkwg_tiled.verified(64, 128, torch.float32, "cpu")  # 32-wide tiles: never tried
    monkeypatch.setenv("LAPR_GDN_DQKWG", "tiled")
    assert not dqkwg_tiled.verified(64, 64, torch.float32, "cpu") and dqkwg_tiled.verified(128, 128, torch.float32, "cpu")
    monkeypatch.setenv("LAPR_GDN_DQKWG", "auto")
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not dqkwg_tiled.verified(256, 256, torch.float32, "cpu")  # no kernels on a plain CPU


INTERPRETED = """
import json, sys, torch, triton
from fla.ops.common import chunk_o
from lapr.backends.dqkwg_tiled import chunk_bwd_dqkwg_tiled, check_inputs, max_errors
from lapr.backends.dqkwg import chunk_bwd_dqkwg as reference
kernel = chunk_o.chunk_bwd_kernel_dqkwg
while not isinstance(kernel, triton.runtime.Autotuner):
    kernel = kernel.fn
kernel.configs = kernel.configs[:1]  # one config: the interpreter has no benchmarker to autotune with
out = {}
for K, V in [(64, 64), (32, 64), (128, 32)]:
    x = check_inputs(K, V, torch.float32, "cpu", B=1, T=128, H=1)
    out[f"{K}x{V}"] = max_errors(chunk_bwd_dqkwg_tiled(**x), reference(**x))
print(json.dumps(out))
"""


def test_tiled_launcher_runs_flas_kernel_like_the_transcription():
    """fla's Triton kernel, launched by lapr's tiled launcher, run by Triton's CPU interpreter, against
    lapr's PyTorch transcription: checks the launcher (tile widths, the NK split of dg, layouts)."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", INTERPRETED], capture_output=True, text=True, env=env, timeout=600)
    if run.returncode != 0 and "interpret" in run.stderr.lower() and "not supported" in run.stderr.lower():
        pytest.skip("this Triton has no CPU interpreter")
    assert run.returncode == 0, run.stderr[-2000:]
    errs = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(errs) == {"64x64", "32x64", "128x32"}
    for shape, e in errs.items():
        assert set(e) == {"dq", "dk", "dw", "dg"}
        assert max(e.values()) < 1e-5, (shape, e)


# --- GPU: end to end through fla's gated delta rule --------------------------------------------

def _gdn_inputs(dtype, K, B=2, T=200, H=4, V=128, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen)
    k = torch.randn(B, T, H, K, generator=gen)
    v = torch.randn(B, T, H, V, generator=gen)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, generator=gen) + 2)  # log decay < 0
    beta = torch.rand(B, T, H, generator=gen)
    h0 = torch.randn(B, H, K, V, generator=gen) * 0.1
    do = torch.randn(B, T, H, V, generator=gen)
    dht = torch.randn(B, H, K, V, generator=gen) * 0.1
    ins = [x.cuda().to(dtype) for x in (q, k, v, g, beta)] + [h0.cuda()]
    return ins, do.cuda(), dht.cuda()


def _grads(fn, ins, do, dht):
    xs = [x.detach().clone().requires_grad_() for x in ins]
    q, k, v, g, beta, h0 = xs  # by keyword: fla's order is (q, k, v, g, beta), lapr's (q, k, v, beta, g)
    o, ht = fn(q=q, k=k, v=v, g=g, beta=beta, scale=q.shape[-1] ** -0.5, initial_state=h0,
               output_final_state=True, use_qk_l2norm_in_kernel=True)
    ((o.float() * do).sum() + (ht.float() * dht).sum()).backward()
    return [None if x.grad is None else x.grad.float() for x in xs]


def _fla_op():
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    return chunk_gated_delta_rule


NAMES = ["dq", "dk", "dv", "dg", "dbeta", "dh0"]
# relative to each gradient's max |.|: fla's fp32 path uses TF32 dots; bf16 inputs round q..beta
TOL = {torch.float32: 5e-3, torch.bfloat16: 5e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("K", [64, 128])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_fla_gdn_with_lapr_dqkwg_matches_reference(dtype, K):
    calls = []

    def spy(*a, **kw):
        calls.append(kw.get("g") is not None)
        return dqkwg(*a, **kw)

    ins, do, dht = _gdn_inputs(dtype, K)
    with backends.swapped(spy, backends.DQKWG):
        got = _grads(_fla_op(), ins, do, dht)
    assert calls == [True]
    ref = _grads(backends.delta_rule, [x.float() for x in ins], do, dht)  # float32 PyTorch reference
    for name, a, b in zip(NAMES, got, ref):
        err = (a - b).abs().max().item() / b.abs().max().item()
        print(f"{dtype} K={K} {name}: {err:.2e} vs lapr's reference")
        assert err < TOL[dtype], f"{name}: relative error {err:.2e}"
    if not backends.fla_gated_backward_broken():  # fla runs its own kernel here: compare directly
        own = _grads(_fla_op(), ins, do, dht)
        for name, a, b in zip(NAMES, got, own):
            err = (a - b).abs().max().item() / b.abs().max().item()
            assert err < TOL[dtype] / 5, f"{name} vs fla's kernel: relative error {err:.2e}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("gate", ["g", "gamma", "none"])
@pytest.mark.parametrize("T", [256, 200])
def test_gpu_matches_flas_own_kernel_where_it_runs(gate, T):
    from fla.ops.common.chunk_o import chunk_bwd_dqkwg as fla_dqkwg

    if gate == "g" and backends.fla_gated_backward_broken():
        pytest.skip("fla refuses its gated kernel here (#640)")
    x = make(11, T, 2, 4, K=64, V=128, dtype=torch.bfloat16, gate=gate)
    x = {n: (t.cuda() if torch.is_tensor(t) else t) for n, t in x.items()}
    if gate == "gamma":
        x["g_gamma"] = x["g_gamma"].float()
    if gate == "g":
        x["g_nat"] = x["g_nat"].float()
    got = call(x, 0.125, False)
    want = call(x, 0.125, False, fn=fla_dqkwg)
    for name, a, b in zip(["dq", "dk", "dw", "dg"], got, want):
        if b is None:
            assert a is None
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        err = (a.float() - b.float()).abs().max().item() / b.float().abs().max().item()
        print(f"{gate} T={T} {name}: {err:.2e} vs fla's kernel")
        assert err < 2e-2, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("K", [128])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_tiled_kernel_matches_reference(dtype, K):
    """fla's GDN op with its gated dqkwg launched at lapr's tile widths (32 / 128, never 64) against
    lapr's float32 reference op; and the one-off check that routes to it passes on this GPU."""
    ins, do, dht = _gdn_inputs(dtype, K)
    with backends.swapped(dqkwg_tiled.chunk_bwd_dqkwg_tiled, backends.DQKWG):
        got = _grads(_fla_op(), ins, do, dht)
    ref = _grads(backends.delta_rule, [x.float() for x in ins], do, dht)
    for name, a, b in zip(NAMES, got, ref):
        err = (a - b).abs().max().item() / b.abs().max().item()
        print(f"tiled {dtype} K={K} {name}: {err:.2e} vs lapr's reference")
        assert err < TOL[dtype], f"{name}: relative error {err:.2e}"
    assert dqkwg_tiled.verified(K, 128, dtype, "cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("K", [64, 128])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_fla_delta_rule_gradients_match_reference(dtype, K):
    """DeltaNet's fla op (no lapr routing) against lapr's float32 reference: fla #984 reports wrong
    dk / dbeta from `prepare_wy_repr_bwd` at chunk size 64 on Hopper with Triton >= 3.4; this records
    whether lapr's DeltaNet training on this GPU is affected. fla's op takes bfloat16 only (lapr trains
    DeltaNet in bf16 on CUDA, models.default_dtype): in float32 it must refuse, not compute."""
    from fla.ops.delta_rule import chunk_delta_rule

    ins, do, dht = _gdn_inputs(dtype, K)
    if dtype == torch.float32:
        with pytest.raises(AssertionError, match="does not support float32"):
            chunk_delta_rule(q=ins[0], k=ins[1], v=ins[2], beta=ins[4])
        return

    def fla_op(q, k, v, g, beta, **kw):  # DeltaNet: no gate
        return chunk_delta_rule(q=q, k=k, v=v, beta=beta, **kw)

    def ref_op(q, k, v, g, beta, **kw):
        return backends.delta_rule(q=q, k=k, v=v, beta=beta, **kw)

    got = _grads(fla_op, ins, do, dht)
    ref = _grads(ref_op, [x.float() for x in ins], do, dht)
    for name, a, b in zip(NAMES, got, ref):
        if name == "dg":
            continue
        err = (a - b).abs().max().item() / b.abs().max().item()
        print(f"delta_rule {dtype} K={K} {name}: {err:.2e} vs lapr's reference")
        assert err < TOL[dtype], f"{name}: relative error {err:.2e}"
