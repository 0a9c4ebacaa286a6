"""Training: `RLAIFVDPOTrainer` (DPO on RLAIF-V pairs, reference log-probs stored with the data) and
`GRPORankTrainer` (GRPO_rank on oracle rankings), each with its config."""

import lazy_loader


# The public names are imported on first use; __init__.pyi lists them (and is what type checkers read).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
