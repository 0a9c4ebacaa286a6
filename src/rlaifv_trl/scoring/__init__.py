"""Scoring answers with a model: the length-normalized implicit reward of a DPO-trained policy (and the policy's or
reference's own log-probabilities) for Best-of-N, and the settings the trainer records for it
(`implicit_reward.json`)."""

import lazy_loader


# The public names are imported on first use; __init__.pyi lists them (and is what type checkers read).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
