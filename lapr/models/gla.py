"""Gated Linear Attention (fla.layers.GatedLinearAttention): key dim = hidden_size * expand_k, split
evenly over heads; state d_k x d_v per head with a key-wise decay gate.

The layer computes gk = logsigmoid(gk_proj(x)) / gate_logit_normalizer, one log decay per key
channel (gk_proj = Linear(D, r) then Linear(r, key_dim) with a bias), and
S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t, o_t = d_k**-0.5 q_t S_t, then a per-head RMSNorm
(fused with the swish output gate). q and k get no rotary embedding and no norm (feature_map None),
so dropping key channel c of q_proj, k_proj (and their short convs) together with row c of gk_proj's
second linear (weight and bias) is exactly the unpruned layer with that channel's q/k zeroed: a
zero key never writes row c of the state and a zero query never reads it, whatever its decay.
A PCA rotation mixes channels that decay at different rates, which no key-wise gate can express:
the gate rows mix like the conv kernels (by U**2, a weighted mean of the gate logits), an
approximation that is exact for a selection only.
Grouped keys (num_kv_heads < num_heads) are not adapted.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from fla.layers.gla import GatedLinearAttention
from fla.models.gla import GLAConfig  # the family package registers it with transformers

from lapr.models.base import AttentionView, ExpandFamily


class GLAFamily(ExpandFamily):
    expand_k_default = 0.5  # GLAConfig's
    model_type = "gla"
    display_name = "GLA"
    color = "#386cb0"
    aliases = ("gla",)
    layer_cls = GatedLinearAttention

    gate_names = ("gk_proj", "g_proj")
    state_v_first = True
    head_params = {
        "q_proj": ("k", 0), "k_proj": ("k", 0), "q_conv1d": ("k", 0), "k_conv1d": ("k", 0),
        "gk_proj.1": ("k", 0), "v_proj": ("v", 0), "v_conv1d": ("v", 0), "g_proj": ("v", 0),
        "o_proj": ("v", 1),
    }
    shared_params = ("gk_proj.0", "g_norm_swish_gate", "g_norm")

    def view(self, index, layer):
        if layer.num_kv_groups != 1:
            raise ValueError(f"GLA layer {index}: grouped keys (num_kv_heads={layer.num_kv_heads} < "
                             f"num_heads={layer.num_heads}) have no lapr adapter")
        return super().view(index, layer)

    def state_from_cache(self, layer_state):
        # the layer keeps its state value-first ([B, H, d_v, d_k]); report it as d_k x d_v
        return layer_state["recurrent_state"].transpose(-1, -2)

    def resized_config(self, config, head_k_dim):
        new = copy.deepcopy(config)
        new.expand_k = head_k_dim * config.num_heads / config.hidden_size
        key_dim = round(new.hidden_size * new.expand_k)
        if not math.isclose(new.hidden_size * new.expand_k, key_dim) or key_dim // new.num_heads != head_k_dim:
            raise RuntimeError(f"resized GLA config gives key dim {new.hidden_size * new.expand_k}, "
                               f"expected {head_k_dim * new.num_heads}")
        return new

    def config_from_spec(self, spec):
        hidden, heads = spec["hidden_size"], spec["num_heads"]
        return GLAConfig(
            hidden_size=hidden, num_hidden_layers=spec["num_layers"], num_heads=heads,
            expand_k=spec["head_k_dim"] * heads / hidden, expand_v=spec["head_v_dim"] * heads / hidden,
            vocab_size=spec["vocab_size"], use_output_gate=spec.get("use_gate", True),
            use_short_conv=spec.get("use_short_conv", False),
            hidden_ratio=spec.get("mlp_ratio", 4), max_position_embeddings=spec.get("max_length", 2048),
            fuse_cross_entropy=False, tie_word_embeddings=spec.get("tie_embeddings", True),
        )

    def cpu_ops(self):
        from lapr.backends.gla import gla
        return {("fla.layers.gla", "chunk_gla"): gla, ("fla.layers.gla", "fused_chunk_gla"): gla,
                ("fla.layers.gla", "fused_recurrent_gla"): gla}

    def state_op(self):
        from lapr.backends.gla import gla
        return gla

    def mean_log_decay(self, args):
        """The key-wise log decay ([B, T, H, K], already logsigmoid / normalizer) averaged over the
        tokens and the key channels: [B, H]."""
        g = args.get("gk") if args.get("gk") is not None else args.get("g")
        return None if g is None else g.float().mean(dim=(1, 3))

    def key_channel_modules(self, view: AttentionView):
        # the decay gate's per-key-channel rows: Linear(r, key_dim) after the low-rank Linear(D, r)
        return super().key_channel_modules(view) + [(view.module.gk_proj[1], "gate")]

    def output_norm(self, view):
        layer = view.module
        return layer.g_norm_swish_gate if layer.fuse_norm_and_gate else layer.g_norm

    def qk_pre_norm(self, view):
        fmap = view.module.feature_map_fn  # after the conv's own SiLU, if any
        return (lambda x: x) if fmap is None else fmap

    def qk_norm(self, view):
        return lambda x: x  # GLA does not normalise q/k

    def op_inputs(self, B, T, H, K, V, g, device, dtype, randn):
        # the layer's gate: logsigmoid(gk_proj(x)) / 16 (gate_logit_normalizer), in the op's dtype
        return {"gk": (F.logsigmoid(randn(B, T, H, K, dt=torch.float32)) / 16).to(dtype)}

    def op_kernel(self, phase, impl):
        if impl == "torch":
            from lapr.backends.gla import gla

            def fn(q, k, v, gk, initial_state=None):
                return gla(q=q, k=k, v=v, gk=gk, initial_state=initial_state, output_final_state=True,
                           state_v_first=True)
            return fn
        from fla.ops.gla import chunk_gla, fused_recurrent_gla

        def fn(q, k, v, gk, initial_state=None):
            if phase == "prefill":
                return chunk_gla(q=q, k=k, v=v, g=gk, initial_state=initial_state, output_final_state=True,
                                 state_v_first=True)
            return fused_recurrent_gla(q=q, k=k, v=v, gk=gk, initial_state=initial_state,
                                       output_final_state=True, state_v_first=True)
        return fn
