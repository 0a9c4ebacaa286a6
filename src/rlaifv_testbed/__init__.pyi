from .data import description_dataset, evaluation_prompts, prompt_dataset, yes_no_dataset
from .models import PRESETS, TinyVLMPreset, available_architectures, build_tiny_vlm, make_tiny_vlm
from .motion import Clip, MotionWorld, motion_facts
from .motion_data import (
    motion_evaluation_prompts,
    motion_prompt_dataset,
    motion_sft_dataset,
    motion_yes_no_dataset,
    motionworld_eval,
)
from .policy import evaluate_hallucination, labeling_accuracy, train_base_policy
from .preferences import oracle_preference_dataset
from .ranker import train_listwise_ranker
from .ranking_data import ranking_dataset, ranking_reply
from .shapes import (
    COLORS,
    DESCRIPTION_PROMPTS,
    EVAL_SEED_OFFSET,
    SHAPES,
    Scene,
    SceneObject,
    ShapesWorld,
    shapes_objects,
)
from .tokenizer import YES_NO_WORDS, build_tokenizer

__all__ = [
    "COLORS",
    "DESCRIPTION_PROMPTS",
    "EVAL_SEED_OFFSET",
    "Clip",
    "MotionWorld",
    "PRESETS",
    "SHAPES",
    "YES_NO_WORDS",
    "Scene",
    "SceneObject",
    "ShapesWorld",
    "TinyVLMPreset",
    "available_architectures",
    "build_tiny_vlm",
    "build_tokenizer",
    "description_dataset",
    "evaluate_hallucination",
    "evaluation_prompts",
    "labeling_accuracy",
    "make_tiny_vlm",
    "motion_evaluation_prompts",
    "motion_facts",
    "motion_prompt_dataset",
    "motion_sft_dataset",
    "motion_yes_no_dataset",
    "motionworld_eval",
    "oracle_preference_dataset",
    "prompt_dataset",
    "ranking_dataset",
    "ranking_reply",
    "shapes_objects",
    "train_base_policy",
    "train_listwise_ranker",
    "yes_no_dataset",
]
