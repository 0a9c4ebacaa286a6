"""The embedded default models, shipped with the package: small LLaVAs already trained on ShapesWorld (a policy, a
labeler and a listwise ranker) and small Qwen2-VLs trained on MotionWorld videos (a policy and a labeler).

Their weights (`weights/*.safetensors`, a few MB each) come from `scripts/train_builtin_policy.py`, which
runs `train_builtin_policy` below. Only the weights are shipped: the architecture, processor and tokenizer are rebuilt
offline by `make_tiny_vlm`, which is deterministic, so `materialize_builtin` needs neither network nor training.
`"builtin:<name>"` works wherever a model name does (`rlaifv_trl.loading.resolve_model_name` finds `cached_builtin`
through the entry point this package registers): the model is saved once
into `$HF_HOME/rlaifv_trl/builtin/` and loaded from there.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from filelock import FileLock
from huggingface_hub import constants
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText

from rlaifv_trl.atomic_io import atomic_directory

from .bias import CaptionBias
from .models import build_tiny_vlm, make_tiny_vlm
from .policy import train_base_policy
from .ranker import train_listwise_ranker


# Registered as a model-name prefix (entry-point group `rlaifv_trl.model_names` in pyproject.toml).
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class BuiltinPolicy:
    """How a built-in policy is made: the tiny architecture and the `train_base_policy` settings (for `task`
    "rank": the `train_listwise_ranker` settings, starting from the built-in `start_from`).

    Attributes:
        arch: The family of `make_tiny_vlm` ("llava", "qwen2_vl", ...).
        preset: Its sizes ("small").
        weights_file: The shipped safetensors file, under `weights/`.
        vision_steps: Steps of vision pretraining.
        sft_steps: Steps of supervised fine-tuning.
        batch_size: Examples per step, in both stages.
        learning_rate: Peak learning rate.
        hallucination_rate: Fraction of descriptions with one error.
        num_scenes: Scenes (or clips) described.
        num_question_scenes: Scenes (or clips) with yes/no questions (default: from `num_scenes`).
        seed: Seed of the initial weights, the data and the training run.
        task: "describe" (descriptions and yes/no questions) or "rank" (listwise ranking queries).
        start_from: For "rank": the built-in whose weights the training starts from.
        world: "shapesworld" (images) or "motionworld" (videos).
        freeze_vision: Keep the pretrained vision tower fixed during fine-tuning.
        caption_bias: Systematic errors of the descriptions (ShapesWorld), for a policy that hallucinates in its mode.
    """

    arch: str
    preset: str
    weights_file: str
    vision_steps: int = 800
    sft_steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    hallucination_rate: float = 0.3
    num_scenes: int = 16_000
    num_question_scenes: int | None = None
    seed: int = 0
    task: str = "describe"
    start_from: str | None = None
    world: str = "shapesworld"
    freeze_vision: bool = True
    caption_bias: CaptionBias | None = None


BUILTIN_POLICIES: dict[str, BuiltinPolicy] = {
    # The policy: describes scenes (hallucinating under sampling) and answers existence questions.
    "shapesworld-llava": BuiltinPolicy(arch="llava", preset="small", weights_file="shapesworld_llava.safetensors"),
    # The biased policy: its captions name the usual partner of some objects even when it is absent (and sometimes a
    # shape's usual colour), so that even its greedy answers hallucinate, like real VLMs' (`bias.CaptionBias`).
    "shapesworld-llava-biased": BuiltinPolicy(
        arch="llava", preset="small", weights_file="shapesworld_llava_biased.safetensors", hallucination_rate=0.1,
        caption_bias=CaptionBias(),
    ),
    # A labeler: another seed, faithful descriptions and twice the existence questions.
    "shapesworld-llava-labeler": BuiltinPolicy(
        arch="llava", preset="small", weights_file="shapesworld_llava_labeler.safetensors", hallucination_rate=0.0,
        num_question_scenes=16_000, seed=1,
    ),
    # A listwise ranker: the labeler fine-tuned on ranking queries (`ranking_data`), 4 candidates per query.
    "shapesworld-llava-ranker": BuiltinPolicy(
        arch="llava", preset="small", weights_file="shapesworld_llava_ranker.safetensors", sft_steps=560,
        batch_size=8, num_scenes=4_480, seed=1, task="rank",
        start_from="shapesworld-llava-labeler",
    ),
    # The video policy: describes MotionWorld clips (an absent object or a wrong motion under sampling).
    "motionworld-qwen2vl": BuiltinPolicy(
        arch="qwen2_vl", preset="small", weights_file="motionworld_qwen2vl.safetensors", world="motionworld",
        vision_steps=500, sft_steps=420, batch_size=32, num_scenes=3000, freeze_vision=False,
    ),
    # Its labeler: another seed, faithful descriptions and more yes/no questions about objects and motions.
    "motionworld-qwen2vl-labeler": BuiltinPolicy(
        arch="qwen2_vl", preset="small", weights_file="motionworld_qwen2vl_labeler.safetensors", world="motionworld",
        vision_steps=500, sft_steps=420, batch_size=32, num_scenes=1500, hallucination_rate=0.0,
        num_question_scenes=2500, seed=1, freeze_vision=False,
    ),
}  # fmt: skip
BUILTIN_POLICY = BUILTIN_PREFIX + "shapesworld-llava"
BUILTIN_BIASED_POLICY = BUILTIN_PREFIX + "shapesworld-llava-biased"
BUILTIN_LABELER = BUILTIN_PREFIX + "shapesworld-llava-labeler"
BUILTIN_RANKER = BUILTIN_PREFIX + "shapesworld-llava-ranker"
BUILTIN_VIDEO_POLICY = BUILTIN_PREFIX + "motionworld-qwen2vl"
BUILTIN_VIDEO_LABELER = BUILTIN_PREFIX + "motionworld-qwen2vl-labeler"


def _spec(name: str) -> BuiltinPolicy:
    key = name.removeprefix(BUILTIN_PREFIX)
    if key not in BUILTIN_POLICIES:
        raise ValueError(
            f"Unknown built-in policy {name!r}; expected one of {[BUILTIN_PREFIX + k for k in BUILTIN_POLICIES]}"
        )
    return BUILTIN_POLICIES[key]


def builtin_weights_path(name: str = BUILTIN_POLICY) -> Path:
    """The shipped safetensors file of a built-in policy."""
    return Path(str(resources.files(__package__) / "weights" / _spec(name).weights_file))


def materialize_builtin(name: str, output_dir: str | Path) -> Path:
    """Save a built-in policy as a regular checkpoint directory (loadable through the Auto classes)."""
    spec = _spec(name)
    weights = builtin_weights_path(name)
    if not weights.is_file():
        raise FileNotFoundError(
            f"The weights of {name!r} are missing ({weights}); produce them with `python scripts/train_builtin_policy.py`"
        )
    model, processor = make_tiny_vlm(spec.arch, spec.preset, seed=spec.seed)
    missing, unexpected = model.load_state_dict(load_file(weights), strict=False)
    missing = [key for key in missing if key not in _tied_keys(model)]
    if missing or unexpected:
        raise ValueError(f"{weights} does not match {name!r}: missing {missing}, unexpected {unexpected}")
    output_dir = Path(output_dir)
    with atomic_directory(output_dir) as scratch:
        model.eval().save_pretrained(scratch)
        processor.save_pretrained(scratch)
    return output_dir


def cached_builtin(name: str) -> Path:
    """The folder a built-in model is saved into once per installed weights file, under `$HF_HOME/rlaifv_trl`."""
    weights = builtin_weights_path(name)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.is_file() else "missing"
    folder = Path(constants.HF_HOME) / "rlaifv_trl" / "builtin" / f"{name.removeprefix(BUILTIN_PREFIX)}-{digest}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):  # processes of one run share the folder
        if not (folder / "config.json").is_file():
            materialize_builtin(name, folder)
    return folder


def train_builtin_policy(name: str = BUILTIN_POLICY, weights_path: str | Path | None = None) -> Path:
    """Train a built-in policy from scratch (each takes at most about 10 minutes on one CPU thread) and write its
    safetensors file."""
    spec = _spec(name)
    weights_path = Path(weights_path) if weights_path else builtin_weights_path(name)
    with tempfile.TemporaryDirectory() as scratch:
        if spec.task == "rank":
            trained = _train_ranker(spec, Path(scratch) / "trained")
        else:
            trained = _train_policy(spec, Path(scratch))
        model = AutoModelForImageTextToText.from_pretrained(trained)
        state = {key: value.contiguous() for key, value in model.state_dict().items() if key not in _tied_keys(model)}
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(weights_path), metadata={"format": "pt", "builtin": name})
    weights_path.chmod(0o644)
    return weights_path


def _train_ranker(spec: BuiltinPolicy, output_dir: Path) -> Path:
    return train_listwise_ranker(
        cached_builtin(BUILTIN_PREFIX + spec.start_from),
        output_dir,
        policy=BUILTIN_POLICY,
        num_steps=spec.sft_steps,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        num_scenes=spec.num_scenes,
        num_sampled_scenes=spec.num_scenes // 2,
        seed=spec.seed,
    )


def _train_policy(spec: BuiltinPolicy, scratch: Path) -> Path:
    initial = build_tiny_vlm(scratch / "initial", spec.arch, spec.preset, seed=spec.seed)
    return train_base_policy(
        initial,
        scratch / "trained",
        num_steps=spec.sft_steps,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        hallucination_rate=spec.hallucination_rate,
        num_scenes=spec.num_scenes,
        num_question_scenes=spec.num_question_scenes,
        vision_steps=spec.vision_steps,
        freeze_vision=spec.freeze_vision,
        seed=spec.seed,
        world=spec.world,
        caption_bias=spec.caption_bias,
    )


def _tied_keys(model) -> set[str]:
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return set(tied)
