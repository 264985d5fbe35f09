"""`mqar-train` stage: train one tiny MQAR model (see lapr.probes.mqar_stage)."""
from lapr.probes.mqar_stage import train_add_arguments as add_arguments
from lapr.probes.mqar_stage import train_run as run

__all__ = ["add_arguments", "run"]
