"""The baselines of `efficacy.py`: rejection-sampling SFT, DPO on ground-truth pairs and Best-of-N.

The two trained baselines start from the candidates a recipe run sampled from the base policy on its first
iteration (the `iteration-1-rankings` config of the run's dataset): the same prompts and answers as the first RLAIF-V
iteration, only the feedback (ground truth) or the objective (SFT on the best answer) differs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed.data import assistant_turn
from rlaifv_testbed.policy import supervised_fine_tune
from rlaifv_testbed.shapes import ShapesWorld, shapes_objects
from rlaifv_trl import LengthNormalizedRewardScorer
from rlaifv_trl.artifacts import write_iteration_dataset
from rlaifv_trl.data import load_ranking_dataset
from rlaifv_trl.feedback.claims import with_instruction
from rlaifv_trl.feedback.config import DEFAULT_YES_NO_INSTRUCTION
from rlaifv_trl.feedback.labeler import LabelGroup, YesNoLabeler
from rlaifv_trl.feedback.pairs import candidate_pairs, sample_pairs
from rlaifv_trl.feedback.rules import RuleBasedClaimSplitter, RuleBasedQuestionWriter
from rlaifv_trl.loading import resolve_model_name


CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "tiny_cpu_biased.yaml"
# Rejection-sampling SFT: epochs, batch and learning rate (the base was fine-tuned at 1e-3).
SFT_EPOCHS, SFT_BATCH, SFT_LEARNING_RATE = 2, 32, 1e-4


def _scene_objects(prompt_id: str) -> list[str]:
    return ShapesWorld().scene(int(prompt_id.removeprefix("shapes-"))).object_names


def truth_score(answer: str, objects: list[str]) -> float:
    """Minus the absent objects an answer names: the labeler's score (minus rejected claims) with exact labels."""
    return -float(sum(name not in objects for name in set(shapes_objects(answer))))


def build_baseline(name: str, run: Path, work_dir: Path, base: str) -> Path:
    """Train baseline `name` ("rs_sft" or "gt_dpo") from the first iteration's candidates of `run`; returns the
    policy's folder (reused when already trained)."""
    rankings = load_ranking_dataset(str(run / "dataset"), name="iteration-1-rankings")
    return {"rs_sft": _rejection_sampling_sft, "gt_dpo": _ground_truth_dpo}[name](rankings, work_dir / name, base)


def _rejection_sampling_sft(rankings: Dataset, output: Path, base: str) -> Path:
    if (output / "config.json").is_file():
        return output
    rows = {"images": [], "prompt": [], "completion": []}
    for row in rankings:
        best = row["ranking"][0][0]
        if row["scores"][best] is None:
            continue
        rows["images"].append(row["images"])
        rows["prompt"].append(row["prompt"])
        rows["completion"].append(assistant_turn(row["candidates"][best]))
    path = resolve_model_name(base)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    steps = SFT_EPOCHS * -(-len(rows["prompt"]) // SFT_BATCH)
    model = supervised_fine_tune(model, processor, Dataset.from_dict(rows), steps, SFT_BATCH, SFT_LEARNING_RATE)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    return output


def _ground_truth_dpo(rankings: Dataset, output: Path, base: str) -> Path:
    """Pairs from the same candidates scored by the ground truth, as the recipe pairs them (gap >= 1, two per
    prompt), trained by the recipe's first iteration (`seed_preference_dataset`)."""
    policy = output / "run" / "models" / "iteration-1"
    if (policy / "config.json").is_file():
        return policy
    rows = {"prompt_id": [], "images": [], "prompt": [], "chosen": [], "rejected": []}
    for index, row in enumerate(rankings):
        objects = _scene_objects(row["prompt_id"])
        scores = [truth_score(answer, objects) for answer in row["candidates"]]
        for chosen, rejected in sample_pairs(candidate_pairs(row["candidates"], scores, 1.0), 2, seed=index):
            rows["prompt_id"].append(row["prompt_id"])
            rows["images"].append(row["images"])
            rows["prompt"].append(row["prompt"])
            rows["chosen"].append(assistant_turn(row["candidates"][chosen]))
            rows["rejected"].append(assistant_turn(row["candidates"][rejected]))
    pairs = Dataset.from_dict(rows)
    write_iteration_dataset(pairs, output / "pairs", 1)
    command = [
        sys.executable, str(CONFIG.parents[2] / "recipes" / "iterative_dpo.py"), "--config", str(CONFIG),
        "--model_name_or_path", base, "--output_dir", str(output / "run"), "--num_iterations", "1",
        "--seed_preference_dataset", str(output / "pairs" / "dataset"), "--preference_dataset_config", "iteration-1",
        "--prompts_per_iteration", str(len(pairs)), "--evaluation", "shapesworld", "--evaluation_prompts", "50",
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return policy


def best_of_n_rows(
    base: str | Path,
    policies: dict[str, Path],
    prompts: Dataset,
    n: int,
    seed: int,
    score: Callable[[list[str], list[list[str]]], dict[str, float]],
    decode: Callable[..., list[str]],
    labeler: str = "builtin:shapesworld-llava-labeler",
) -> dict[str, dict[str, dict[str, float]]]:
    """Per policy, the metrics of its greedy answer and of the best of `n` answers sampled at temperature 1.0 as each
    scorer picks it: `labeler` (fewest claims the labeler rejects), `oracle` (fewest absent objects) and, for the
    DPO-trained policies, `implicit_reward` and `policy_log_prob` (`LengthNormalizedRewardScorer` modes, the base as
    reference)."""
    labeler_path = resolve_model_name(labeler)
    judge = YesNoLabeler(
        AutoModelForImageTextToText.from_pretrained(labeler_path).eval(), AutoProcessor.from_pretrained(labeler_path)
    )
    splitter, writer = RuleBasedClaimSplitter(), RuleBasedQuestionWriter()
    objects = prompts["objects"]
    results = {}
    for name, path in {"base": Path(base), **policies}.items():
        model = AutoModelForImageTextToText.from_pretrained(path).eval()
        processor = AutoProcessor.from_pretrained(path)
        greedy = decode(model, processor, prompts, 0.0, seed)
        samples = [decode(model, processor, prompts, 1.0, seed + k) for k in range(n)]
        per_prompt = [[sample[i] for sample in samples] for i in range(len(prompts))]
        picks = {
            "oracle": [max(answers, key=lambda a, o=o: truth_score(a, o)) for answers, o in zip(per_prompt, objects)],
            "labeler": _labeler_picks(judge, splitter, writer, prompts, per_prompt),
        }
        if name != "base":
            for mode in ("implicit_reward", "policy_log_prob"):
                reference = AutoModelForImageTextToText.from_pretrained(base).eval()
                scorer = LengthNormalizedRewardScorer(model, reference, processor, mode=mode)
                picks[mode] = _scorer_picks(scorer, prompts, per_prompt)
        results[name] = {"greedy": score(greedy, objects)} | {
            f"best_of_{n}[{key}]": score(answers, objects) for key, answers in picks.items()
        }
    return results


def _labeler_picks(judge, splitter, writer, prompts, per_prompt) -> list[str]:
    """Per prompt, the first answer with the fewest claims the labeler rejects (the recipe's score)."""
    picks = []
    for images, answers in zip(prompts["images"], per_prompt):
        claims = splitter.split([""] * len(answers), answers)
        groups = [
            LabelGroup(images, [with_instruction(q, DEFAULT_YES_NO_INSTRUCTION) for q in writer.write(answer_claims)])
            for answer_claims in claims
        ]
        labels = judge.label(groups)
        rejected = [sum(not label.accepted for label in group) for group in labels]
        picks.append(answers[min(range(len(answers)), key=rejected.__getitem__)])
    return picks


@torch.no_grad()
def _scorer_picks(scorer: LengthNormalizedRewardScorer, prompts: Dataset, per_prompt: list[list[str]]) -> list[str]:
    picks = []
    for prompt, images, answers in zip(prompts["prompt"], prompts["images"], per_prompt):
        best = scorer.best_of_n(prompt, images, answers).best
        picks.append(answers[0] if best is None else best)
    return picks
