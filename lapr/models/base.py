"""What pruning and profiling need to know about one linear-attention layer, family-independent."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class AttentionView:
    """Handles on one attention layer. q/k rows are grouped per head: rows h*d_k .. (h+1)*d_k."""

    index: int
    module: nn.Module
    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    q_conv: nn.Module | None
    k_conv: nn.Module | None
    v_conv: nn.Module | None
    num_heads: int          # q/k heads
    num_v_heads: int        # value heads (> num_heads under grouped value attention)
    head_k_dim: int
    head_v_dim: int
    gates: dict             # family-specific gate parameters/modules (beta, decay, output gate)

    @property
    def state_shape(self) -> tuple[int, int, int]:
        """Recurrent state per sequence: one d_k x d_v matrix per value head."""
        return (self.num_v_heads, self.head_k_dim, self.head_v_dim)

    def state_bytes(self, dtype: torch.dtype = torch.float32) -> int:
        h, k, v = self.state_shape
        return h * k * v * torch.empty((), dtype=dtype).element_size()


class Family:
    """One model family: every fact lapr needs about it, so that no code outside lapr/models and
    lapr/backends branches on a family name. A new family is one module in lapr/models with a
    Family subclass (found by lapr.models on import; its class-level `model_type`, `display_name`,
    `color` and `aliases` are also read without importing it, by lapr.families).

    Facts, each an attribute or method below: the fla layer class; the key dim in a config and a
    config resized to another key dim; the kernel entry points and their CPU stand-ins (`cpu_ops`),
    the op that also yields states (`state_op`) and fla's CUDA state pass (`fla_state_pass`); the
    tensors indexed by key channel (`key_channel_modules`) and by head (`head_params`); the output
    norm the query scale passes through; a config with fewer heads; the op benchmark's inputs and
    kernel call."""

    model_type: str = ""
    display_name: str = ""      # for reports
    color: str = ""             # for reports (hex)
    aliases: tuple[str, ...] = ()  # model names that mean this family in reports ('gdn')
    layer_cls: type | None = None

    def attention(self, model: nn.Module) -> list[AttentionView]:
        return [self.view(i, m) for i, m in enumerate(m for m in model.modules() if isinstance(m, self.layer_cls))]

    gate_names: tuple[str, ...] = ()  # the layer's gate / step-size modules and parameters

    def view(self, index: int, layer: nn.Module) -> AttentionView:
        """The view of an fla layer with the usual attribute names (q_proj, q_conv1d, ...)."""
        conv = layer.use_short_conv
        return AttentionView(
            index=index, module=layer, q_proj=layer.q_proj, k_proj=layer.k_proj, v_proj=layer.v_proj,
            o_proj=layer.o_proj, q_conv=layer.q_conv1d if conv else None,
            k_conv=layer.k_conv1d if conv else None, v_conv=layer.v_conv1d if conv else None,
            num_heads=layer.num_heads, num_v_heads=getattr(layer, "num_v_heads", layer.num_heads),
            head_k_dim=layer.head_k_dim, head_v_dim=layer.head_v_dim,
            gates={name: getattr(layer, name, None) for name in self.gate_names},
        )

    def state_from_cache(self, layer_state: dict) -> torch.Tensor:
        """Recurrent state [B, HV, d_k, d_v] from the layer's entry in fla's cache."""
        return layer_state["recurrent_state"]

    # ---- config ------------------------------------------------------------------------------

    def resized_config(self, config, head_k_dim: int):
        """A copy of `config` whose attention layers have key dim `head_k_dim` and unchanged values;
        RuntimeError where the config cannot express it exactly."""
        raise NotImplementedError

    def config_from_spec(self, spec: dict):
        raise NotImplementedError

    def head_k_dim_of(self, config: dict) -> int:
        """Key dim per head from a checkpoint's config.json (a plain dict)."""
        raise NotImplementedError

    # ---- kernels -----------------------------------------------------------------------------

    def cpu_ops(self) -> dict:
        """{(fla module, name): lapr PyTorch stand-in} for every attention-kernel entry point the
        family's layer calls (lapr.backends installs them where fla's Triton kernels cannot run)."""
        return {}

    def state_op(self):
        """lapr's op for this family's kernel calls that also takes `states_at` (sorted 0-based
        token positions) and then returns the states after them as a third value, [B, HV, P, K, V]."""
        raise NotImplementedError

    fla_state_pass: tuple = ()  # (module, name) of fla's chunked state pass, wrapped by profiling on CUDA

    def mean_log_decay(self, args: dict) -> torch.Tensor | None:
        """Per-head mean natural-log decay [B, HV] of one kernel call (`args`: its bound arguments),
        or None for a family without a decay gate."""
        return None

    def init_decay(self, model: nn.Module, low: float, high: float, generator: torch.Generator) -> bool:
        """Redraw each layer's decay rate A (the log-decay is -A * softplus(...)) from U(low, high);
        False (nothing changed) for a family without a decay gate. Used by the MQAR probe only."""
        return False

    gated_backward_quirk: bool = False  # fla issue #640 (the gated chunk_bwd_dqkwg): lapr.backends.for_training

    # ---- q/k as the kernel sees them (calibration) ---------------------------------------------

    def qk_pre_norm(self, view: AttentionView):
        """Map the q/k tensor calibration hooks (the conv output, or the projection output without a
        conv) to what enters the kernel before its per-head norm. Default: fla's DeltaNet-style
        layers (qk_activation silu / relu / elu / identity, the conv's own SiLU; qk_norm 'sum')."""
        import torch.nn.functional as F

        layer = view.module
        act = getattr(layer, "qk_activation", "silu")  # GDN: always silu
        conv = view.q_conv is not None

        def apply(x: torch.Tensor) -> torch.Tensor:
            if act == "silu":
                return x if conv else F.silu(x)  # with a conv, silu is the conv's own activation
            if act == "relu":
                x = x.relu()
            elif act == "elu":
                x = F.elu(x) + 1.0
            if getattr(layer, "qk_norm", "l2") == "sum":
                x = x.unflatten(-1, (-1, view.head_k_dim))
                x = (x / x.sum(-1, keepdim=True)).flatten(-2)
            return x

        return apply

    def qk_norm(self, view: AttentionView):
        """The kernel's per-head q/k normalisation of a pre-norm [N, H, d_k] tensor: fla's in-kernel
        L2 norm (qk_norm='l2', GDN always); none left for qk_norm='sum' (in qk_pre_norm)."""
        if getattr(view.module, "qk_norm", "l2") == "sum":
            return lambda x: x
        from lapr.backends.delta_rule import l2norm
        return l2norm

    # ---- tensors by key channel and by head --------------------------------------------------

    def key_channel_modules(self, view: AttentionView) -> list[tuple[nn.Module, str]]:
        """(module, kind) of every module whose output rows are the layer's key channels, grouped per
        q/k head like q_proj. kind: 'linear' (rows rotate with a PCA basis), 'conv' (a depthwise
        conv: kernels mix by U**2, bias rotates), 'gate' (a per-channel gate: weight and bias mix by
        U**2). Channel pruning takes the kept rows of each; only 'linear' and 'conv' modules are
        zeroed by the reference (a gate acts on zero channels only)."""
        return [(m, kind) for m, kind in ((view.q_proj, "linear"), (view.k_proj, "linear"),
                                          (view.q_conv, "conv"), (view.k_conv, "conv")) if m is not None]

    def output_norm(self, view: AttentionView) -> nn.Module:
        """The module whose input is the kernel output o (scaled by the query scale): the per-head
        output norm, or o_proj for a layer without one."""
        norm = getattr(view.module, "o_norm", None)
        return view.o_proj if norm is None else norm

    # attention-module parameters by head: name (top-level attribute, or a dotted prefix) -> (unit,
    # axis); unit 'k': H q/k heads x d_k rows, 'v': HV value heads x d_v, 'h': one entry per value head
    head_params: dict = {}
    shared_params: tuple[str, ...] = ()  # parameters shared by all heads (per-channel norms)

    def head_layout(self, name: str):
        """(unit, axis) of a parameter of the attention module by name, 'shared', or None (unknown)."""
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in self.head_params:
                return self.head_params[prefix]
            if prefix in self.shared_params:
                return "shared"
        return None

    def head_config(self, config, kept_heads: int, view: AttentionView):
        """A copy of `config` with `kept_heads` heads per layer and d_k, d_v unchanged."""
        raise NotImplementedError

    # ---- op benchmark ------------------------------------------------------------------------

    def op_inputs(self, B: int, T: int, H: int, K: int, V: int, randn, rand) -> dict:
        """Kernel kwargs besides q, k, v, shaped as the layer passes them (randn(*size, scale=, dt=),
        rand(*size): the benchmark's generators)."""
        raise NotImplementedError

    state_v_first: bool = False  # the layer keeps its cached state [.., d_v, d_k]

    def op_kernel(self, phase: str, impl: str):
        """fn(q, k, v, initial_state=None, **op_inputs) -> (o, final_state), called as the layer
        calls its kernel (output_final_state=True). impl 'fla' (Triton) or 'torch' (lapr's)."""
        raise NotImplementedError


class ExpandFamily(Family):
    """A family whose key and value dims are `expand_k` / `expand_v` times hidden_size, split evenly
    over the heads (fla's DeltaNet and GLA configs): the key dim and the head-pruned config follow."""

    expand_k_default: float = 1.0  # the config class's default expand_k

    def head_k_dim_of(self, config):
        return round(config["hidden_size"] * config.get("expand_k", self.expand_k_default)) // config["num_heads"]

    def head_config(self, config, kept_heads, view):
        new = copy.deepcopy(config)
        new.num_heads = kept_heads
        new.expand_k = view.head_k_dim * kept_heads / config.hidden_size
        new.expand_v = view.head_v_dim * kept_heads / config.hidden_size
        return new

