from .data import load_preference_dataset, load_ranking_dataset
from .feedback import FeedbackConfig, FeedbackOutput, RLAIFVFeedbackGenerator, YesNoLabeler
from .ranking import DivideAndConquerRanker, ListwiseRanker, RankerReward, Ranking, parse_ranking
from .scoring import AnswerLogProbs, BestOfN, LengthNormalizedRewardScorer
from .trainer import GRPORankConfig, GRPORankTrainer, RLAIFVDPOConfig, RLAIFVDPOTrainer, precompute_ref_log_probs

__all__ = [
    "AnswerLogProbs",
    "BestOfN",
    "DivideAndConquerRanker",
    "FeedbackConfig",
    "FeedbackOutput",
    "GRPORankConfig",
    "GRPORankTrainer",
    "LengthNormalizedRewardScorer",
    "ListwiseRanker",
    "RLAIFVDPOConfig",
    "RLAIFVDPOTrainer",
    "RLAIFVFeedbackGenerator",
    "RankerReward",
    "Ranking",
    "YesNoLabeler",
    "load_preference_dataset",
    "load_ranking_dataset",
    "parse_ranking",
    "precompute_ref_log_probs",
]
