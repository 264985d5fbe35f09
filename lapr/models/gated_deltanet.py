"""Gated DeltaNet (fla.layers.GatedDeltaNet): key dim = head_dim per q/k head, value heads may be grouped."""
from __future__ import annotations

import copy
import math

import torch
from fla.layers.gated_deltanet import GatedDeltaNet
from fla.models.gated_deltanet import GatedDeltaNetConfig  # the family package registers it

from lapr.models.base import Family
from lapr.models.delta_net import DELTA_HEAD_PARAMS


def _expand(head_v_dim: int, head_k_dim: int) -> float:
    """expand_v such that fla's int(head_dim * expand_v) gives back head_v_dim exactly: the plain
    ratio can land one ulp low (int(49 * (32/49)) == 31), so nudge it up."""
    expand = head_v_dim / head_k_dim
    while int(head_k_dim * expand) < head_v_dim:
        expand = math.nextafter(expand, math.inf)
    return expand


class GatedDeltaNetFamily(Family):
    model_type = "gated_deltanet"
    display_name = "Gated DeltaNet"
    color = "#d95f02"
    aliases = ("gdn", "gated_deltanet", "gateddeltanet")
    layer_cls = GatedDeltaNet

    gate_names = ("a_proj", "b_proj", "A_log", "dt_bias", "g_proj")
    fla_state_pass = (("fla.ops.gated_delta_rule.chunk", "chunk_gated_delta_rule_fwd_h"),)
    head_params = DELTA_HEAD_PARAMS
    shared_params = ("o_norm",)
    gated_backward_quirk = True
    state_v_first = True

    def state_from_cache(self, layer_state):
        # fla's GDN layer keeps the state value-first ([B, HV, d_v, d_k]); report it as d_k x d_v
        return layer_state["recurrent_state"].transpose(-1, -2)

    def resized_config(self, config, head_k_dim):
        # head_v_dim = head_dim * expand_v must not change, so expand_v absorbs the new head_dim
        new = copy.deepcopy(config)
        head_v_dim = int(config.head_dim * config.expand_v)
        new.head_dim = head_k_dim
        new.expand_v = _expand(head_v_dim, head_k_dim)
        if int(head_k_dim * new.expand_v) != head_v_dim:
            raise RuntimeError(f"cannot express head_dim={head_k_dim}, head_v_dim={head_v_dim} in a "
                               f"GatedDeltaNetConfig (expand_v={new.expand_v!r})")
        return new

    def config_from_spec(self, spec):
        heads = spec["num_heads"]
        return GatedDeltaNetConfig(
            hidden_size=spec["hidden_size"], num_hidden_layers=spec["num_layers"], num_heads=heads,
            num_v_heads=spec.get("num_v_heads") or heads, head_dim=spec["head_k_dim"],
            expand_v=_expand(spec["head_v_dim"], spec["head_k_dim"]), vocab_size=spec["vocab_size"],
            use_gate=spec.get("use_gate", True), hidden_ratio=spec.get("mlp_ratio", 4),
            max_position_embeddings=spec.get("max_length", 2048), fuse_cross_entropy=False,
            tie_word_embeddings=spec.get("tie_embeddings", True),
        )

    def head_k_dim_of(self, config):
        return int(config["head_dim"])

    def head_config(self, config, kept_heads, view):
        new = copy.deepcopy(config)
        new.num_heads = kept_heads
        new.num_v_heads = kept_heads
        return new

    def cpu_ops(self):
        from lapr.backends import modules
        from lapr.backends.delta_rule import delta_rule
        return {("fla.layers.gated_deltanet", "chunk_gated_delta_rule"): delta_rule,
                ("fla.layers.gated_deltanet", "fused_recurrent_gated_delta_rule"): delta_rule,
                ("fla.layers.gated_deltanet", "causal_conv1d"): modules.short_conv}

    def state_op(self):
        from lapr.backends.delta_rule import delta_rule
        return delta_rule

    def init_decay(self, model, low, high, generator):
        # fla draws A ~ U(0, 16) (GatedDeltaNet.__init__ / _init_weights); the MQAR probe narrows it
        for layer in (m for m in model.modules() if isinstance(m, self.layer_cls)):
            A = torch.empty(layer.A_log.shape).uniform_(low, high, generator=generator)
            with torch.no_grad():
                layer.A_log.copy_(A.log().to(layer.A_log))
        return True

    def mean_log_decay(self, args):
        """g [B, T, HV], raw when use_gate_in_kernel (the layer passes a_proj(x) with A_log / dt_bias;
        the gate is then -exp(A_log) * softplus(g + dt_bias), applied exactly as the op applies it)."""
        g = args.get("g")
        if g is None:
            return None
        if args.get("use_gate_in_kernel"):
            from lapr.backends.delta_rule import gdn_gate
            g = gdn_gate(g, args.get("A_log"), args.get("dt_bias"))
        return g.float().mean(dim=1)

    def op_inputs(self, B, T, H, K, V, g, device, dtype, randn):
        return {"g": randn(B, T, H),                # raw a_proj output
                "beta": randn(B, T, H),             # raw b_proj output (sigmoid in kernel)
                "A_log": torch.empty(H, device=device).uniform_(0, math.log(16), generator=g),
                "dt_bias": randn(H, scale=0.1, dt=torch.float32)}

    def op_kernel(self, phase, impl):
        if impl == "torch":
            from lapr.backends.delta_rule import delta_rule as base
        else:
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
            base = chunk_gated_delta_rule if phase == "prefill" else fused_recurrent_gated_delta_rule

        def fn(q, k, v, g, beta, A_log, dt_bias, initial_state=None):
            return base(q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state,
                        output_final_state=True, use_qk_l2norm_in_kernel=True,
                        use_gate_in_kernel=True, A_log=A_log, dt_bias=dt_bias,
                        use_beta_sigmoid_in_kernel=True, state_v_first=True)
        return fn
