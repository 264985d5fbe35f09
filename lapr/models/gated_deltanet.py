"""Gated DeltaNet (fla.layers.GatedDeltaNet): key dim = head_dim per q/k head, value heads may be grouped."""
from __future__ import annotations

import copy
import math

from fla.layers.gated_deltanet import GatedDeltaNet
from fla.models.gated_deltanet import GatedDeltaNetConfig  # the family package registers it

from lapr.models.base import Family


def _expand(head_v_dim: int, head_k_dim: int) -> float:
    """expand_v such that fla's int(head_dim * expand_v) gives back head_v_dim exactly: the plain
    ratio can land one ulp low (int(49 * (32/49)) == 31), so nudge it up."""
    expand = head_v_dim / head_k_dim
    while int(head_k_dim * expand) < head_v_dim:
        expand = math.nextafter(expand, math.inf)
    return expand


class GatedDeltaNetFamily(Family):
    model_type = "gated_deltanet"
    layer_cls = GatedDeltaNet

    gate_names = ("a_proj", "b_proj", "A_log", "dt_bias", "g_proj")

    def state_from_cache(self, layer_state):
        # fla's GDN layer keeps the state value-first ([B, HV, d_v, d_k]); report it as d_k x d_v
        return layer_state["recurrent_state"].transpose(-1, -2)

    def resized_config(self, config, head_k_dim):
        # head_v_dim = head_dim * expand_v must not change, so expand_v absorbs the new head_dim
        new = copy.deepcopy(config)
        head_v_dim = int(config.head_dim * config.expand_v)
        new.head_dim = head_k_dim
        new.expand_v = _expand(head_v_dim, head_k_dim)
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
