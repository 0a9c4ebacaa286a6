from .reward import BestOfN, LengthNormalizedRewardScorer
from .trainer import RLAIFVDPOConfig, RLAIFVDPOTrainer, precompute_ref_log_probs


__all__ = [
    "BestOfN",
    "LengthNormalizedRewardScorer",
    "RLAIFVDPOConfig",
    "RLAIFVDPOTrainer",
    "precompute_ref_log_probs",
]
