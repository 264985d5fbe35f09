"""Training: the pretrain stage that makes the embedded default models."""
