"""Query/key channel selection for structured state pruning (paper A, Nazari & Rusch 2026).

Per attention head, a DeltaNet / Gated DeltaNet layer keeps `keep` of its d_k key channels;
the surgery (lapr.pruning.surgery) drops the same indices from q_proj rows, k_proj rows and the q/k short-conv
channels, so the state shrinks from d_k x d_v to keep x d_v. This package only decides
*which* channels survive.

API
- `ChannelContext`: everything one layer offers (weights, grads, input RMS, activations).
- `METHODS`: name -> select(ctx, keep) -> LongTensor [H, keep], indices sorted ascending.
  Filled by `@register(name)` in one module per method: random, l1, l2, wanda, taylor,
  pivoted_qr, strong_rrqr.
- `select_channels(method, ctx, keep)`: validated entry point.
- `rotation_basis(method, ctx, keep)` (pca.py) for the ROTATIONS "pca" (paper A's baseline as
  LAP's code computes it: keys only, after the L2 norm, mean-centred covariance) and "pca_qk"
  (lapr's earlier variant: q and k stacked, before the L2 norm, uncentred second moment). A
  rotation is not a selection, so they are NOT in METHODS; `select_channels("pca", ...)` raises a
  ValueError pointing to the basis functions.
- `ALL_METHODS`: the 9 names the stage accepts (METHODS + ROTATIONS); `REQUIRES`: method ->
  calibration fields it reads (empty: weights only, no calib.pt needed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Selector = Callable[["ChannelContext", int], Tensor]
METHODS: dict[str, Selector] = {}
ROTATIONS = ("pca", "pca_qk")  # names that live outside METHODS; see pca.rotation_basis

# Calibration statistics (ChannelContext fields, i.e. calib.pt layer keys) each method reads.
# Methods with an empty tuple work from the weights alone and need no calib.pt.
REQUIRES: dict[str, tuple[str, ...]] = {
    "random": (), "l1": (), "l2": (),
    "wanda": ("input_rms",),
    "taylor": ("q_grad", "k_grad"),
    "pivoted_qr": ("q_act", "k_act"),
    "strong_rrqr": ("q_act", "k_act"),
    "pca": ("k_norm_cov",),
    "pca_qk": ("q_act", "k_act"),
}


@dataclass
class ChannelContext:
    """One attention layer; CPU float32 tensors. Optional fields are None when not collected.

    q_weight, k_weight: [H, d_k, D] q_proj / k_proj rows grouped per head.
    q_grad, k_grad:     [H, d_k, D] dL/dW accumulated over calibration batches (taylor).
    input_rms:          [D] RMS over calibration tokens of the q/k proj input (wanda).
    q_act, k_act:       [H, N, d_k] post-short-conv, pre-L2-norm activations (qr, pca_qk).
    k_norm_mean:        [H, d_k] mean of the L2-normalised keys over all calibration tokens.
    k_norm_cov:         [H, d_k, d_k] their mean-centred covariance (pca, as LAP computes it).
    seed:               base seed for stochastic methods (random).
    """

    q_weight: Tensor
    k_weight: Tensor
    q_grad: Tensor | None = None
    k_grad: Tensor | None = None
    input_rms: Tensor | None = None
    q_act: Tensor | None = None
    k_act: Tensor | None = None
    k_norm_mean: Tensor | None = None
    k_norm_cov: Tensor | None = None
    seed: int = 0

    def __post_init__(self):
        if self.q_weight.dim() != 3 or self.q_weight.shape != self.k_weight.shape:
            raise ValueError(
                f"q_weight and k_weight must both be [H, d_k, D]; got "
                f"{tuple(self.q_weight.shape)} and {tuple(self.k_weight.shape)}")
        heads, d_k, hidden = self.q_weight.shape
        for name in ("q_grad", "k_grad"):
            value = getattr(self, name)
            if value is not None and value.shape != self.q_weight.shape:
                raise ValueError(f"{name} must match q_weight {tuple(self.q_weight.shape)}; "
                                 f"got {tuple(value.shape)}")
        if self.input_rms is not None and tuple(self.input_rms.shape) != (hidden,):
            raise ValueError(f"input_rms must be [{hidden}]; got {tuple(self.input_rms.shape)}")
        for name in ("q_act", "k_act"):
            value = getattr(self, name)
            if value is not None and (value.dim() != 3 or value.shape[0] != heads
                                      or value.shape[2] != d_k):
                raise ValueError(f"{name} must be [{heads}, N, {d_k}]; got {tuple(value.shape)}")
        for name, shape in (("k_norm_mean", (heads, d_k)), ("k_norm_cov", (heads, d_k, d_k))):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} must be {list(shape)}; got {tuple(value.shape)}")

    @property
    def heads(self) -> int:
        return self.q_weight.shape[0]

    @property
    def d_k(self) -> int:
        return self.q_weight.shape[1]

    def require(self, method: str, *fields: str) -> None:
        """Raise a ValueError naming the fields `method` needs but the context lacks."""
        missing = [f for f in fields if getattr(self, f) is None]
        if missing:
            raise ValueError(f"channel method {method!r} needs ctx.{', ctx.'.join(missing)}, "
                             f"which is None; collect it during calibration")


def register(name: str) -> Callable[[Selector], Selector]:
    """Decorator: add a selector to METHODS under `name` (names must be unique)."""
    def add(fn: Selector) -> Selector:
        if name in METHODS or name in ROTATIONS:
            raise ValueError(f"channel method {name!r} is already registered")
        METHODS[name] = fn
        return fn
    return add


def top_channels(scores: Tensor, keep: int) -> Tensor:
    """[H, d_k] scores -> LongTensor [H, keep] of the highest, sorted ascending.

    A stable descending sort makes ties deterministic (lower index wins).
    """
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    return order[:, :keep].sort(dim=-1).values


def select_channels(method: str, ctx: ChannelContext, keep: int) -> Tensor:
    """Channels to keep per head: LongTensor [H, keep], unique, sorted ascending."""
    if method in ROTATIONS:
        raise ValueError(f"{method!r} is a rotation, not a channel selection: use "
                         f"lapr.pruning.channels.rotation_basis({method!r}, ctx, keep) (pca_basis / "
                         f"pca_qk_basis) -> [H, d_k, keep] and absorb the basis into q/k proj at "
                         f"surgery")
    if method not in METHODS:
        raise ValueError(f"unknown channel method {method!r}; known: {sorted(METHODS)} "
                         f"(rotations: {list(ROTATIONS)})")
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= ctx.d_k:
        raise ValueError(f"keep must be an int in [1, d_k={ctx.d_k}]; got {keep!r}")
    chosen = METHODS[method](ctx, keep)
    # Cheap post-condition so a buggy method cannot hand the surgery a bad index set.
    if chosen.dtype != torch.long or tuple(chosen.shape) != (ctx.heads, keep):
        raise RuntimeError(f"{method} returned {chosen.dtype} {tuple(chosen.shape)}, "
                           f"expected torch.int64 {(ctx.heads, keep)}")
    return chosen


# Importing the method modules fills METHODS (they import register from here).
from lapr.pruning.channels import magnitude, qr, random, taylor, wanda  # noqa: E402,F401
from lapr.pruning.channels.pca import pca_basis, pca_qk_basis, rotation_basis  # noqa: E402,F401

# Every name the pruning stage accepts: the selections, then the rotations.
ALL_METHODS: tuple[str, ...] = tuple(sorted(METHODS)) + ROTATIONS
assert set(ALL_METHODS) == set(REQUIRES), "REQUIRES must list every method"
