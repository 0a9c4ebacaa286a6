from .collator import DataCollatorForVisionLanguageModelingWithVideos, DataCollatorForVisionPreferenceWithRef
from .grpo_rank_config import GRPORankConfig
from .grpo_rank_trainer import GRPORankTrainer
from .grpo_video import VideoPromptsMixin
from .reference_logps import has_ref_log_probs, precompute_ref_log_probs
from .rlaifv_dpo_config import RLAIFVDPOConfig
from .rlaifv_dpo_trainer import RLAIFVDPOTrainer

__all__ = [
    "DataCollatorForVisionLanguageModelingWithVideos",
    "DataCollatorForVisionPreferenceWithRef",
    "GRPORankConfig",
    "GRPORankTrainer",
    "RLAIFVDPOConfig",
    "RLAIFVDPOTrainer",
    "VideoPromptsMixin",
    "has_ref_log_probs",
    "precompute_ref_log_probs",
]
