from .implicit_reward import REWARD_CONFIG_NAME, RLAIFV_BETA, ImplicitRewardConfig
from .scorer import SCORE_MODES, AnswerLogProbs, BestOfN, LengthNormalizedRewardScorer

__all__ = [
    "REWARD_CONFIG_NAME",
    "RLAIFV_BETA",
    "SCORE_MODES",
    "AnswerLogProbs",
    "BestOfN",
    "ImplicitRewardConfig",
    "LengthNormalizedRewardScorer",
]
