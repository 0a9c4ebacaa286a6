from .arguments import IterativeDPOArguments, check_recipe_arguments
from .preferences import add_reference_log_probs, collect_preferences
from .publishing import HubPublisher, write_dataset_card, write_model_card
from .run import RecipeRun, run_settings
from .shared_arguments import EvaluationArguments, HubArguments, PromptArguments
from .summary import RunSummary
from .training import train_policy

__all__ = [
    "EvaluationArguments",
    "HubArguments",
    "HubPublisher",
    "IterativeDPOArguments",
    "PromptArguments",
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
