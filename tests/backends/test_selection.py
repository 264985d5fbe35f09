"""Backend selection: full swap, partial swap (GDN training path) and restore."""
import fla.layers.delta_net as dn
import fla.layers.gated_deltanet as gdn
import pytest

from lapr import backends
from lapr.backends import attention_ops, delta_rule, use_cpu_backend
from lapr.models import FAMILIES


@pytest.fixture
def restore():
    yield
    use_cpu_backend(False)
    backends.auto()  # leave the process as every other CPU test expects it


def test_partial_swap_only_touches_the_gated_op(restore):
    use_cpu_backend(False)
    assert dn.chunk_delta_rule is not delta_rule and gdn.chunk_gated_delta_rule is not delta_rule
    use_cpu_backend(True, only=attention_ops(FAMILIES["gated_deltanet"]))
    assert gdn.chunk_gated_delta_rule is delta_rule and gdn.fused_recurrent_gated_delta_rule is delta_rule
    assert dn.chunk_delta_rule is not delta_rule  # DeltaNet keeps fla's kernel
    use_cpu_backend(True)
    assert dn.chunk_delta_rule is delta_rule and backends.cpu_backend_active()


def test_training_path_without_cuda_is_the_torch_backend(restore):
    from lapr.models import build_model

    model = build_model(dict(family="gated_deltanet", hidden_size=32, num_layers=1, num_heads=2,
                             head_k_dim=8, head_v_dim=8, vocab_size=50))
    assert backends.for_training(model) == "torch"
    assert not backends.fla_gated_backward_broken()  # only Hopper + Triton 3.4-3.7.0 is affected


def test_every_family_kernel_is_swapped(restore):
    """Each family's cpu_ops (lapr/models) are installed by the full swap and restored by its undo."""
    from lapr.backends import owner

    use_cpu_backend(False)
    for fam in FAMILIES.values():
        for (path, name), impl in fam.cpu_ops().items():
            assert getattr(owner(path), name) is not impl, (fam.model_type, name)
    use_cpu_backend(True)
    for fam in FAMILIES.values():
        assert attention_ops(fam), fam.model_type  # the kernel entry points profiling wraps
        for (path, name), impl in fam.cpu_ops().items():
            assert getattr(owner(path), name) is impl, (fam.model_type, name)
