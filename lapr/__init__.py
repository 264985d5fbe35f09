"""lapr: state reduction in linear-attention language models, reproducible end to end."""
__version__ = "0.1.0"
