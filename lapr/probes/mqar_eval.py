"""`mqar-eval` stage: recall of one MQAR model under channel / head pruning (see lapr.probes.mqar_stage)."""
from lapr.probes.mqar_stage import eval_add_arguments as add_arguments
from lapr.probes.mqar_stage import eval_run as run

__all__ = ["add_arguments", "run"]
