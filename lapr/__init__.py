"""lapr: state reduction in linear-attention language models, reproducible end to end."""
import os

__version__ = "0.1.0"

# Keep Triton's autotuning results on disk beside its compiled kernels: every pipeline job is its own
# process, and fla re-benchmarks each kernel's configurations per process otherwise (seconds per
# kernel and shape, paid again by each of a profile's dozens of GPU jobs). A user's setting wins.
os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")
