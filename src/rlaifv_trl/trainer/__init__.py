"""DPO training for RLAIF-V: `RLAIFVDPOTrainer`, its config, and reference log-probs stored with the data."""

from .collator import DataCollatorForVisionPreferenceWithRef
from .reference_logps import has_ref_log_probs, precompute_ref_log_probs
from .rlaifv_dpo_config import RLAIFVDPOConfig
from .rlaifv_dpo_trainer import RLAIFVDPOTrainer


__all__ = [
    "DataCollatorForVisionPreferenceWithRef",
    "RLAIFVDPOConfig",
    "RLAIFVDPOTrainer",
    "has_ref_log_probs",
    "precompute_ref_log_probs",
]
