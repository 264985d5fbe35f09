"""Query/key channel selection for structured state pruning (paper A, Nazari & Rusch 2026).

Per attention head, a DeltaNet / Gated DeltaNet layer keeps `keep` of its d_k key channels;
the surgery (lapr.pruning.surgery) drops the same indices from q_proj rows, k_proj rows and the q/k short-conv
channels, so the state shrinks from d_k x d_v to keep x d_v. This package only decides
*which* channels survive.

API
- `ChannelContext`: everything one layer offers (weights, grads, input RMS, activations).
- `register(name, requires=(...), rotation=False, order=, color=, marker=, label=)`: the decorator
  every method module uses. It declares the method's name and the calibration statistics
  (ChannelContext fields = calib.pt layer keys) it reads; `requires=()` means weights only, no
  calib.pt needed. The optional display facts are the figures' (lapr.report.style): place in the
  display order (a number; the built-ins 10, 20, ...), hex colour, matplotlib marker, display name;
  a method that leaves them out comes after the others with a fallback colour and its name.
- `REGISTRY`: name -> `Method(name, fn, requires, rotation, order, color, marker, label)`, every
  registered method.
- `METHODS`: the selections, name -> select(ctx, keep) -> LongTensor [H, keep], indices sorted
  ascending: random, l1, l2, wanda, taylor, pivoted_qr, strong_rrqr.
- `select_channels(method, ctx, keep)`: validated entry point for a selection.
- `ROTATIONS` / `rotation_basis(method, ctx, keep)`: the methods registered with `rotation=True`,
  fn(ctx, keep) -> float basis [H, d_k, keep]: "pca" (paper A's baseline as LAP's code computes
  it: keys only, after the L2 norm, mean-centred covariance) and "pca_qk" (lapr's earlier variant:
  q and k stacked, before the L2 norm, uncentred second moment); see pca.py. A rotation is not a
  selection, so they are NOT in METHODS; `select_channels("pca", ...)` raises a ValueError
  pointing to `rotation_basis`.
- `ALL_METHODS`: every name the stage accepts (sorted selections, then sorted rotations);
  `REQUIRES`: method -> calibration fields it reads, derived from the registry.

Adding a method = one module in this package: importing the package imports every module in it
(pkgutil), so its `@register("name", requires=(...))` runs; nothing else lists method names or looks
(the workflow's config check and the figures' styles, via lapr/config.py, read the names and display
facts from the `register` calls in these files without importing torch, so give them as literals).
tests/pruning/test_channel_plugin.py proves it on a copy of the package.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor

Selector = Callable[["ChannelContext", int], Tensor]


@dataclass(frozen=True)
class Method:
    """One registered method: `fn(ctx, keep)`, the ChannelContext fields it reads (`requires`, empty:
    weights only, no calib.pt), whether it is a rotation (fn returns a basis [H, d_k, keep]), and its
    look in the figures (None: undeclared; lapr.report.style reads these from the source)."""

    name: str
    fn: Selector
    requires: tuple[str, ...] = ()
    rotation: bool = False
    order: float | None = None
    color: str | None = None
    marker: str | None = None
    label: str | None = None


REGISTRY: dict[str, Method] = {}  # filled by @register as the method modules are imported
METHODS: dict[str, Selector] = {}  # the selections of REGISTRY: name -> fn


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


# The optional ChannelContext fields: what a method may declare in `requires` (calib.pt layer keys).
CALIB_FIELDS = frozenset(f.name for f in fields(ChannelContext)) - {"q_weight", "k_weight", "seed"}


def register(name: str, requires: tuple[str, ...] | list[str] = (), rotation: bool = False, *,
             order: float | None = None, color: str | None = None, marker: str | None = None,
             label: str | None = None) -> Callable[[Selector], Selector]:
    """Decorator: register `fn(ctx, keep)` as channel method `name` (unique), reading the
    ChannelContext fields `requires` (calib.pt layer keys; empty: weights only). A selection returns
    LongTensor [H, keep] and joins METHODS; `rotation=True`: it returns a basis [H, d_k, keep].
    `order`, `color`, `marker`, `label`: its place and look in the figures (module doc)."""
    requires = (requires,) if isinstance(requires, str) else tuple(requires)
    if unknown := [f for f in requires if f not in CALIB_FIELDS]:
        raise ValueError(f"channel method {name!r}: requires {unknown} are not calibration fields; "
                         f"known: {sorted(CALIB_FIELDS)}")

    def add(fn: Selector) -> Selector:
        if name in REGISTRY:
            raise ValueError(f"channel method {name!r} is already registered")
        REGISTRY[name] = Method(name, fn, requires, bool(rotation), order, color, marker, label)
        if not rotation:
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
    if method in REGISTRY and REGISTRY[method].rotation:
        raise ValueError(f"{method!r} is a rotation, not a channel selection: use "
                         f"lapr.pruning.channels.rotation_basis({method!r}, ctx, keep) "
                         f"({' / '.join(REGISTRY[r].fn.__name__ for r in rotations())}) -> "
                         f"[H, d_k, keep] and absorb the basis into q/k proj at surgery")
    if method not in METHODS:
        raise ValueError(f"unknown channel method {method!r}; known: {sorted(METHODS)} "
                         f"(rotations: {list(rotations())})")
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= ctx.d_k:
        raise ValueError(f"keep must be an int in [1, d_k={ctx.d_k}]; got {keep!r}")
    ctx.require(method, *REGISTRY[method].requires)
    chosen = METHODS[method](ctx, keep)
    # Cheap post-condition so a buggy method cannot hand the surgery a bad index set.
    if chosen.dtype != torch.long or tuple(chosen.shape) != (ctx.heads, keep):
        raise RuntimeError(f"{method} returned {chosen.dtype} {tuple(chosen.shape)}, "
                           f"expected torch.int64 {(ctx.heads, keep)}")
    return chosen


def rotations() -> tuple[str, ...]:
    return tuple(sorted(n for n, m in REGISTRY.items() if m.rotation))


def rotation_basis(method: str, ctx: ChannelContext, keep: int) -> Tensor:
    """The basis [H, d_k, keep] of rotation `method` (e.g. "pca" or "pca_qk")."""
    if method not in REGISTRY or not REGISTRY[method].rotation:
        raise ValueError(f"{method!r} is not a rotation; rotations: {list(rotations())}")
    return REGISTRY[method].fn(ctx, keep)


def discover() -> list[str]:
    """Import every module of this package (their @register calls fill REGISTRY); their names."""
    names = [info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


discover()
from lapr.pruning.channels.pca import pca_basis, pca_qk_basis  # noqa: E402,F401  (re-exported)

ROTATIONS: tuple[str, ...] = rotations()  # the rotations' names, outside METHODS
# Every name the stage accepts: the selections, then the rotations.
ALL_METHODS: tuple[str, ...] = tuple(sorted(METHODS)) + ROTATIONS
# Calibration statistics (ChannelContext fields, i.e. calib.pt layer keys) each method reads;
# an empty tuple: weights alone, no calib.pt.
REQUIRES: dict[str, tuple[str, ...]] = {name: REGISTRY[name].requires for name in ALL_METHODS}
