"""med-rlvr: Med-RLVR (arXiv 2502.19655) as an OpenRLHF 0.11.2 plugin."""
