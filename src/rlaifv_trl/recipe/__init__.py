"""The iterative RLAIF-V recipe behind `recipes/iterative_dpo.py`: one small piece per job.

- `arguments`: `IterativeDPOArguments` (prompts, iterations, evaluation, Hub), parsed beside `FeedbackConfig`,
  `RLAIFVDPOConfig` and TRL's `ModelConfig`;
- `run`: the run folder (lock, manifest, stages run once);
- `prompts`, `preferences`: each iteration's prompts, feedback, pairs and reference log-probs;
- `training`: DPO from the last complete checkpoint, LoRA merged, the policy saved;
- `publishing`: cards, implicit-reward settings, Hub pushes;
- `summary`: metrics per policy and where everything went.
"""

from .arguments import IterativeDPOArguments, check_recipe_arguments
from .preferences import add_reference_log_probs, collect_preferences
from .publishing import HubPublisher, write_dataset_card, write_model_card
from .run import RecipeRun, run_settings
from .summary import RunSummary
from .training import train_policy


__all__ = [
    "HubPublisher",
    "IterativeDPOArguments",
    "RecipeRun",
    "RunSummary",
    "add_reference_log_probs",
    "check_recipe_arguments",
    "collect_preferences",
    "run_settings",
    "train_policy",
    "write_dataset_card",
    "write_model_card",
]
