"""The embedded default: ShapesWorld scenes and tiny vision-language models built offline."""

from .data import description_dataset, evaluation_prompts, prompt_dataset, yes_no_dataset
from .models import PRESETS, TinyVLMPreset, available_architectures, build_tiny_vlm, make_tiny_vlm
from .policy import evaluate_hallucination, labeling_accuracy, train_base_policy
from .preferences import oracle_preference_dataset
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
    "oracle_preference_dataset",
    "prompt_dataset",
    "shapes_objects",
    "train_base_policy",
    "yes_no_dataset",
]
