"""The baselines and ablations of `efficacy.py`, and Best-of-N.

The trained baselines but GRPO_rank start from the candidates a recipe run sampled from the base policy on its first
iteration (the `iteration-1-rankings` config of the run's dataset): the same prompts and answers as the first RLAIF-V
iteration, only the feedback or the objective differs:

- `rs_sft`: rejection-sampling SFT (TRL's `SFTTrainer` on the labeler's best candidate per prompt);
- `gt_dpo`: DPO on pairs scored by the ground truth (the feedback's ceiling);
- `confounded`: DPO on pairs whose answers come from different decodings (the ablation of deconfounded sampling);
- `holistic`: DPO on pairs labeled by the labeler judging whole answers (the ablation of divide and conquer);
- `grpo_rank`: the GRPO_rank recipe's tiny config on the same base (its own fresh prompts).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed.builtin import BUILTIN_LABELER
from rlaifv_testbed.data import assistant_turn
from rlaifv_testbed.policy import supervised_fine_tune
from rlaifv_testbed.shapes import ShapesWorld, shapes_objects
from rlaifv_trl import FeedbackConfig, LengthNormalizedRewardScorer, RLAIFVFeedbackGenerator
from rlaifv_trl.artifacts import write_iteration_dataset
from rlaifv_trl.data import load_ranking_dataset
from rlaifv_trl.feedback.claims import with_instruction
from rlaifv_trl.feedback.config import DEFAULT_YES_NO_INSTRUCTION
from rlaifv_trl.feedback.labeler import LabelGroup, YesNoLabeler
from rlaifv_trl.feedback.pairs import candidate_pairs, sample_pairs
from rlaifv_trl.loading import load_vlm, resolve_model_name
from rlaifv_trl.ranking import DivideAndConquerRanker


CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "tiny_cpu_biased.yaml"
GRPO_CONFIG = CONFIG.with_name("grpo_rank_tiny_cpu.yaml")
BASELINES = ("rs_sft", "gt_dpo", "confounded", "holistic", "grpo_rank")
# Confounded pairs: the second decoding's candidates per prompt and temperature.
CONFOUNDED_CANDIDATES, CONFOUNDED_TEMPERATURE = 4, 0.3
HOLISTIC_QUESTION = 'Is this a correct description of the image: "{answer}"'
# Rejection-sampling SFT: epochs, batch and learning rate (the base was fine-tuned at 1e-3).
SFT_EPOCHS, SFT_BATCH, SFT_LEARNING_RATE = 2, 32, 1e-4


def _scene_objects(prompt_id: str) -> list[str]:
    return ShapesWorld().scene(int(prompt_id.removeprefix("shapes-"))).object_names


def truth_score(answer: str, objects: list[str]) -> float:
    """Minus the absent objects an answer names: the labeler's score (minus rejected claims) with exact labels."""
    return -float(sum(name not in objects for name in set(shapes_objects(answer))))


def build_baseline(name: str, run: Path, work_dir: Path, base: str, labeler: str = BUILTIN_LABELER) -> Path:
    """Train baseline `name` (one of `BASELINES`) from the first iteration's candidates of `run`; returns the
    policy's folder (reused when already trained)."""
    output = work_dir / name
    if name == "grpo_rank":
        return _grpo_rank(output, base, labeler)
    rankings = load_ranking_dataset(str(run / "dataset"), name="iteration-1-rankings")
    if name == "rs_sft":
        return _rejection_sampling_sft(rankings, output, base)
    policy = output / "run" / "models" / "iteration-1"
    if (policy / "config.json").is_file():
        return policy
    pairs = {"gt_dpo": _ground_truth_pairs, "confounded": _confounded_pairs, "holistic": _holistic_pairs}[name]
    return _train_pairs(pairs(rankings, output, base, labeler), output, base)


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


def _pair_rows(rankings: Dataset, candidates_and_scores) -> Dataset:
    """Two pairs per prompt (score gap >= 1, seeded by the row) from `candidates_and_scores(index, row)`, which gives
    the prompt's answers, their scores and the pairs allowed (None: all)."""
    rows = {"prompt_id": [], "images": [], "prompt": [], "chosen": [], "rejected": []}
    for index, row in enumerate(rankings):
        answers, scores, allowed = candidates_and_scores(index, row)
        for chosen, rejected in sample_pairs(candidate_pairs(answers, scores, 1.0, allowed), 2, seed=index):
            rows["prompt_id"].append(row["prompt_id"])
            rows["images"].append(row["images"])
            rows["prompt"].append(row["prompt"])
            rows["chosen"].append(assistant_turn(answers[chosen]))
            rows["rejected"].append(assistant_turn(answers[rejected]))
    return Dataset.from_dict(rows)


def _ground_truth_pairs(rankings: Dataset, output: Path, base: str, labeler: str) -> Dataset:
    """The same candidates scored by the ground truth (the feedback's ceiling)."""

    def scored(index: int, row: dict):
        objects = _scene_objects(row["prompt_id"])
        return row["candidates"], [truth_score(answer, objects) for answer in row["candidates"]], None

    return _pair_rows(rankings, scored)


def _confounded_pairs(rankings: Dataset, output: Path, base: str, labeler: str) -> Dataset:
    """Pairs whose two answers come from different decodings: the candidates at temperature 1.0 against
    `CONFOUNDED_CANDIDATES` new ones at `CONFOUNDED_TEMPERATURE`, labeled by the same labeler and score, so
    the pairs also teach the difference between the decodings (the paper's confounded pairs)."""
    args = FeedbackConfig(
        labeler_model_name_or_path=labeler, num_candidates=CONFOUNDED_CANDIDATES, temperature=CONFOUNDED_TEMPERATURE,
        max_new_tokens=48, sampling_batch_size=16, labeler_batch_size=256, length_balancing=False,
    )  # fmt: skip
    prompts = rankings.select_columns(["prompt_id", "images", "prompt"])
    other = RLAIFVFeedbackGenerator(resolve_model_name(base), args=args).generate(
        prompts, output / "feedback", seed=0, disable_tqdm=True
    )
    low = {row["prompt_id"]: row for row in other.rankings}

    def crossed(index: int, row: dict):
        extra = low[row["prompt_id"]]
        answers, scores = row["candidates"] + extra["candidates"], row["scores"] + extra["scores"]
        boundary = len(row["candidates"])
        return answers, scores, lambda chosen, rejected: (chosen < boundary) != (rejected < boundary)

    return _pair_rows(rankings, crossed)


def _holistic_pairs(rankings: Dataset, output: Path, base: str, labeler: str) -> Dataset:
    """The same candidates judged whole: the labeler answers one yes/no question holding the entire answer
    (`HOLISTIC_QUESTION`); an accepted answer scores 0, a rejected one -1."""
    model, processor = load_vlm(labeler, role="labeler")
    judge = YesNoLabeler(model.eval(), processor, batch_size=256)
    groups = [
        LabelGroup(
            row["images"],
            [with_instruction(HOLISTIC_QUESTION.format(answer=a.strip()), DEFAULT_YES_NO_INSTRUCTION) for a in row["candidates"]],
        )
        for row in rankings
    ]  # fmt: skip
    verdicts = [[label.accepted for label in group] for group in judge.label(groups)]
    return _pair_rows(
        rankings, lambda index, row: (row["candidates"], [0.0 if ok else -1.0 for ok in verdicts[index]], None)
    )


def _train_pairs(pairs: Dataset, output: Path, base: str) -> Path:
    """One DPO iteration of the recipe on `pairs` (`seed_preference_dataset`, the shipped settings)."""
    write_iteration_dataset(pairs, output / "pairs", 1)
    command = [
        sys.executable, str(CONFIG.parents[2] / "recipes" / "iterative_dpo.py"), "--config", str(CONFIG),
        "--model_name_or_path", base, "--output_dir", str(output / "run"), "--num_iterations", "1",
        "--seed_preference_dataset", str(output / "pairs" / "dataset"), "--preference_dataset_config", "iteration-1",
        "--prompts_per_iteration", str(len(pairs)), "--evaluation", "shapesworld", "--evaluation_prompts", "50",
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return output / "run" / "models" / "iteration-1"


def _grpo_rank(output: Path, base: str, labeler: str) -> Path:
    """GRPO_rank's shipped tiny config on the same base: 256 fresh prompts, 8 answers each ranked by the labeler."""
    policy = output / "run" / "models" / "iteration-1"
    if not (policy / "config.json").is_file():
        command = [
            sys.executable, str(CONFIG.parents[2] / "recipes" / "grpo_rank.py"), "--config", str(GRPO_CONFIG),
            "--model_name_or_path", base, "--oracle_model_name_or_path", labeler, "--output_dir", str(output / "run"),
            "--evaluation", "shapesworld", "--evaluation_prompts", "50",
        ]  # fmt: skip
        subprocess.run(command, check=True)
    return policy


# Best-of-N pickers that rank with claim labels: (labeler or the policy itself, confirmed-claim weight, tie break).
CLAIM_PICKERS = {
    "labeler": ("labeler", 0.0, "keep"),
    "labeler[more_claims]": ("labeler", 0.0, "fewer_rejected_then_more_claims"),
    "labeler[w=0.5]": ("labeler", 0.5, "keep"),
    "labeler[w=1]": ("labeler", 1.0, "keep"),
    "self": ("policy", 0.0, "keep"),
    "self[more_claims]": ("policy", 0.0, "fewer_rejected_then_more_claims"),
    "self[w=0.5]": ("policy", 0.5, "keep"),
}


def best_of_n_rows(
    base: str | Path,
    policies: dict[str, Path],
    prompts: Dataset,
    n: int,
    seed: int,
    score: Callable[[list[str], list[list[str]]], dict[str, float]],
    decode: Callable[..., list[str]],
    labeler: str = BUILTIN_LABELER,
) -> dict[str, dict[str, dict[str, float]]]:
    """Per policy, the metrics of its greedy answer and of the best of `n` answers sampled at temperature 1.0 as each
    scorer picks it: `oracle` (fewest absent objects), the `DivideAndConquerRanker` pickers of `CLAIM_PICKERS` (the
    labeler's claim score, RLAIF-V's or crediting confirmed claims, and the same with the policy labeling its own
    claims: self-feedback), `labeler[guarded]` and `self[guarded]` (among the greedy answer and the samples, the
    fewest rejected claims without fewer confirmed ones than greedy) and, for the DPO-trained policies, `implicit_reward` and `policy_log_prob`
    (`LengthNormalizedRewardScorer` modes, the base as reference)."""
    labeler_model, labeler_processor = load_vlm(labeler, role="labeler")
    objects = prompts["objects"]
    reference = AutoModelForImageTextToText.from_pretrained(base).eval()  # the DPO policies' reference
    results = {}
    for name, path in {"base": Path(base), **policies}.items():
        model = AutoModelForImageTextToText.from_pretrained(path).eval()
        processor = AutoProcessor.from_pretrained(path)
        greedy = decode(model, processor, prompts, 0.0, seed)
        samples = [decode(model, processor, prompts, 1.0, seed + k) for k in range(n)]
        per_prompt = [[sample[i] for sample in samples] for i in range(len(prompts))]
        picks = {
            "oracle": [max(answers, key=lambda a, o=o: truth_score(a, o)) for answers, o in zip(per_prompt, objects)]
        }
        judges = {"labeler": (labeler_model, labeler_processor), "policy": (model, processor)}
        for key, (judge, weight, tie_break) in CLAIM_PICKERS.items():
            ranker = DivideAndConquerRanker(
                *judges[judge], tie_break=tie_break, confirmed_claim_weight=weight, batch_size=256
            )
            rankings = ranker.rank_batch(prompts["prompt"], prompts["images"], per_prompt)
            picks[key] = [answers[r.groups[0][0]] for answers, r in zip(per_prompt, rankings)]
        for judge in ("labeler", "self"):
            with_greedy = [[answer, *answers] for answer, answers in zip(greedy, per_prompt)]
            ranker = DivideAndConquerRanker(
                *judges["policy" if judge == "self" else judge], tie_break="fewer_rejected_then_more_claims",
                first_is_reference=True, batch_size=256,
            )  # fmt: skip
            rankings = ranker.rank_batch(prompts["prompt"], prompts["images"], with_greedy)
            picks[f"{judge}[guarded]"] = [answers[r.groups[0][0]] for answers, r in zip(with_greedy, rankings)]
        if name != "base":
            for mode, ref_model in (("implicit_reward", reference), ("policy_log_prob", None)):
                scorer = LengthNormalizedRewardScorer(model, ref_model, processor, mode=mode)
                picks[mode] = _scorer_picks(scorer, prompts, per_prompt)
        results[name] = {"greedy": score(greedy, objects)} | {
            f"best_of_{n}[{key}]": score(answers, objects) for key, answers in picks.items()
        }
    return results


@torch.no_grad()
def _scorer_picks(scorer: LengthNormalizedRewardScorer, prompts: Dataset, per_prompt: list[list[str]]) -> list[str]:
    picks = []
    for prompt, images, answers in zip(prompts["prompt"], prompts["images"], per_prompt):
        best = scorer.best_of_n(prompt, images, answers).best
        picks.append(answers[0] if best is None else best)
    return picks
