"""scalearn: parameter-efficient task transfer with ScaLearn (arXiv 2310.01217)."""

__version__ = "0.1.0"
