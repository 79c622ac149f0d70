"""synthmed.protocol: the whole pipeline of paper 000 from one config (``synthmed protocol``).

Train the candidate architectures (each with and without DiffAugment, one model per class),
evaluate and rank them with the evaluation suite (ten synthetic sets per model, ANOVA and
Bonferroni-corrected post-hoc tests between architectures), run the utility protocol with the
winner, run paper 004's benchmark sweeps, and write one report.

    from synthmed.protocol import load_protocol_config, run_protocol
    html = run_protocol(load_protocol_config("protocol_quick", ["data.path=prepared/ds"]), "out/protocol")
"""

from synthmed.protocol.config import ProtocolConfig, build_protocol_config, load_protocol_config
from synthmed.protocol.runner import run_protocol

__all__ = ["ProtocolConfig", "build_protocol_config", "load_protocol_config", "run_protocol"]
