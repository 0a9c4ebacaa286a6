"""rlaifv-trl: RLAIF-V for TRL."""

from .data import load_preference_dataset
from .feedback import FeedbackConfig, FeedbackOutput, RLAIFVFeedbackGenerator, YesNoLabeler
from .reward import AnswerLogProbs, BestOfN, LengthNormalizedRewardScorer
from .trainer import RLAIFVDPOConfig, RLAIFVDPOTrainer, precompute_ref_log_probs


__all__ = [
    "AnswerLogProbs",
    "BestOfN",
    "FeedbackConfig",
    "FeedbackOutput",
    "LengthNormalizedRewardScorer",
    "RLAIFVDPOConfig",
    "RLAIFVDPOTrainer",
    "RLAIFVFeedbackGenerator",
    "YesNoLabeler",
    "load_preference_dataset",
    "precompute_ref_log_probs",
]
