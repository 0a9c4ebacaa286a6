from .claims import ClaimSplitter, QuestionWriter, with_instruction
from .config import FeedbackConfig
from .generator import RLAIFVFeedbackGenerator
from .labeler import LabelGroup, YesNoLabel, YesNoLabeler
from .llm_claims import CausalLMRunner, LLMClaimSplitter, LLMQuestionWriter, parse_claims, parse_question
from .merge import FeedbackOutput
from .pairs import answer_score, candidate_pairs, length_balance, ranks, sample_pairs
from .pipeline import FeedbackPipeline
from .report import RunReport
from .rules import RuleBasedClaimSplitter, RuleBasedQuestionWriter, polar_question, split_claims
from .runner import FeedbackRunner
from .sampling import CandidateSampler, derive_seed

__all__ = [
    "CandidateSampler",
    "CausalLMRunner",
    "ClaimSplitter",
    "FeedbackConfig",
    "FeedbackOutput",
    "FeedbackPipeline",
    "FeedbackRunner",
    "LLMClaimSplitter",
    "LLMQuestionWriter",
    "LabelGroup",
    "QuestionWriter",
    "RLAIFVFeedbackGenerator",
    "RuleBasedClaimSplitter",
    "RuleBasedQuestionWriter",
    "RunReport",
    "YesNoLabel",
    "YesNoLabeler",
    "answer_score",
    "candidate_pairs",
    "derive_seed",
    "length_balance",
    "parse_claims",
    "parse_question",
    "polar_question",
    "ranks",
    "sample_pairs",
    "split_claims",
    "with_instruction",
]
