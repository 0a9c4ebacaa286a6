"""DPO on RLAIF-V pairs vs GRPO on the raw divide-and-conquer score vs GRPO_rank, on images and on video.

Two test beds, each with its built-in policy (which hallucinates when sampling at T = 1.0) and built-in labeler:
ShapesWorld scenes (`images`: `builtin:shapesworld-llava`, described objects) and MotionWorld clips (`video`:
`builtin:motionworld-qwen2vl`, described objects and motions). In a test bed every arm starts from the policy, gets the
same training prompts, the same number of policy samples (prompts x generations) and the same oracle: the labeler
judging the claims of each answer (score = -rejected claims):

- `dpo`: the feedback generator samples the candidates once, pairs them, and `RLAIFVDPOTrainer` trains (make demo's
  DPO settings);
- `grpo_score`: TRL's `GRPOTrainer` with the score as reward (TRL's defaults: group-scaled advantages);
- `grpo_rank_gain`, `grpo_rank_rank_gap`, `grpo_rank_ndcg_penalty`: `GRPORankTrainer` with each advantage form, the
  oracle's ranking of the same score.

Every GRPO arm uses the same settings (one epoch, 4 prompts x `--generations` answers per step, KL beta 0.04, learning
rate `--grpo-lr`). Each trained policy describes held-out scenes or clips (seeds the training never saw) at T = 1.0:
the report gives the share of descriptions with a hallucination (`chair_response`), hallucinated mentions
(`chair_mention`), recall of the true objects and the mean length in words, and on video the accuracy on temporal
questions (which shape moved, in which direction, what appeared first), per seed and as mean +- spread.

    python benchmarks/ranking_comparison.py --report ranking_comparison.md            # both test beds, one seed
    python benchmarks/ranking_comparison.py --beds images --seeds 0 1 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from common import cpu_name
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from rlaifv_testbed import evaluation_prompts, shapes_objects
from rlaifv_testbed.builtin import BUILTIN_LABELER, BUILTIN_POLICY, BUILTIN_VIDEO_LABELER, BUILTIN_VIDEO_POLICY
from rlaifv_testbed.motion import MotionWorld
from rlaifv_testbed.motion_data import motion_evaluation_prompts, motionworld_prompts, score_motion_answers
from rlaifv_testbed.recipe import shapesworld_prompts
from rlaifv_trl import FeedbackConfig, GRPORankConfig, GRPORankTrainer, RLAIFVDPOConfig, RLAIFVDPOTrainer
from rlaifv_trl.feedback import RLAIFVFeedbackGenerator
from rlaifv_trl.generation import generate_batch
from rlaifv_trl.loading import load_vlm
from rlaifv_trl.metrics.chair import chair
from rlaifv_trl.ranking import DivideAndConquerRanker, RankerReward
from rlaifv_trl.trainer import VideoPromptsMixin


ARMS = ("dpo", "grpo_score", "grpo_rank_gain", "grpo_rank_rank_gap", "grpo_rank_ndcg_penalty")
EVAL_SEED = 10_000  # seeds of the held-out sampling (training never sees the scenes or clips)
CPU = {"use_cpu": True, "bf16": False, "report_to": "none", "save_strategy": "no", "disable_tqdm": True}


def describe_scenes(model, processor, num_scenes: int, seed: int) -> dict[str, float]:
    """CHAIR, recall and mean length (words) of one T = 1.0 description per held-out ShapesWorld scene."""
    scenes = evaluation_prompts(num_scenes, seed=seed)
    answers = sample_answers(model, processor, scenes["prompt"], scenes["images"], None, seed)
    result = chair(answers, scenes["objects"], shapes_objects)
    return {"chair_response": result.response_rate, "chair_mention": result.mention_rate, "recall": result.recall,
            "words": mean_words(answers)}  # fmt: skip


def describe_clips(model, processor, num_clips: int, seed: int) -> dict[str, float]:
    """Hallucinated objects or motions, recall and mean length of one T = 1.0 description per held-out MotionWorld
    clip, and the accuracy on temporal questions (which shape moved, where, what appeared first) about other clips."""
    clips = motion_evaluation_prompts(num_clips, seed=seed, kinds=("describe",))
    answers = sample_answers(model, processor, clips["prompt"], [[] for _ in clips["prompt"]], clips["videos"], seed)
    world = MotionWorld()
    scored = score_motion_answers([world.clip(s) for s in clips["clip_seed"]], clips["kind"], answers)
    questions = motion_evaluation_prompts(num_clips, seed=seed, kinds=("moved", "direction", "first"))
    replies = sample_answers(model, processor, questions["prompt"], [[] for _ in questions["prompt"]],
                             questions["videos"], seed)  # fmt: skip
    asked = score_motion_answers([world.clip(s) for s in questions["clip_seed"]], questions["kind"], replies)
    return {"chair_response": scored.response_rate, "chair_mention": scored.mention_rate, "recall": scored.recall,
            "words": mean_words(answers), "question_accuracy": asked.question_accuracy}  # fmt: skip


def sample_answers(model, processor, prompts, images, videos, seed: int) -> list[str]:
    torch.manual_seed(seed)
    answers = []
    for start in range(0, len(prompts), 50):
        batch = slice(start, start + 50)
        answers += generate_batch(
            model, processor, prompts[batch], images[batch], videos=videos[batch] if videos else None,
            max_new_tokens=48, do_sample=True, temperature=1.0,
        )  # fmt: skip
    return answers


def mean_words(answers: list[str]) -> float:
    return statistics.mean(len(answer.split()) for answer in answers)


@dataclass(frozen=True)
class TestBed:
    """Where the arms train and are measured: the built-in policy and labeler, prompts, and the held-out metrics."""

    policy: str
    labeler: str
    prompts: Callable[[int, int], Dataset]
    describe: Callable[..., dict[str, float]]


TEST_BEDS = {
    "images": TestBed(BUILTIN_POLICY, BUILTIN_LABELER, lambda n, seed: shapesworld_prompts(1, n, seed),
                      describe_scenes),
    "video": TestBed(BUILTIN_VIDEO_POLICY, BUILTIN_VIDEO_LABELER, lambda n, seed: motionworld_prompts(1, n, seed),
                     describe_clips),
}  # fmt: skip


def train_dpo(bed: TestBed, prompts, generations: int, seed: int, folder: Path):
    feedback = FeedbackConfig(
        labeler_model_name_or_path=bed.labeler, num_candidates=generations, temperature=1.0, max_new_tokens=48,
        sampling_batch_size=16, labeler_batch_size=256, pairs_per_prompt=2, length_balancing=False,
    )  # fmt: skip
    output = RLAIFVFeedbackGenerator(bed.policy, args=feedback).generate(prompts, seed=seed, disable_tqdm=True)
    model, processor = load_vlm(bed.policy)
    args = RLAIFVDPOConfig(
        str(folder), beta=0.1, learning_rate=2e-5, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.01,
        num_train_epochs=2, per_device_train_batch_size=32, max_length=256, precompute_ref_log_probs=True,
        seed=seed, **CPU,
    )  # fmt: skip
    RLAIFVDPOTrainer(model=model, args=args, train_dataset=output.preference, processing_class=processor).train()
    return model, processor, {"pairs": len(output.preference)}


def train_grpo(
    bed: TestBed, prompts, generations: int, seed: int, folder: Path, reward: Callable, form: str | None, lr: float
):
    model, processor = load_vlm(bed.policy)
    settings = dict(
        per_device_train_batch_size=4 * generations, num_generations=generations, max_completion_length=48,
        temperature=1.0, learning_rate=lr, num_train_epochs=1, beta=0.04, seed=seed, logging_steps=1, **CPU,
    )  # fmt: skip
    if form is None:
        trainer = VideoGRPOTrainer(model, reward, args=GRPOConfig(str(folder), **settings), train_dataset=prompts,
                              processing_class=processor)  # fmt: skip
    else:
        args = GRPORankConfig(str(folder), rank_advantage=form, **settings)
        trainer = GRPORankTrainer(model, reward, args=args, train_dataset=prompts, processing_class=processor)
    trainer.train()
    rewards = [log["reward"] for log in trainer.state.log_history if "reward" in log]
    quarter = max(1, len(rewards) // 4)
    return (
        model,
        processor,
        {
            "reward_first_quarter": statistics.mean(rewards[:quarter]),
            "reward_last_quarter": statistics.mean(rewards[-quarter:]),
        },
    )


class VideoGRPOTrainer(VideoPromptsMixin, GRPOTrainer):
    """TRL's `GRPOTrainer` (its own advantages) with the video prompt support of `GRPORankTrainer`: image and text
    batches go through TRL's code unchanged."""


def oracle_reward(bed: TestBed) -> RankerReward:
    """The built-in labeler's divide-and-conquer score of each answer (-rejected claims), as a TRL reward function;
    GRPO_rank uses only its order within each group, ties kept."""
    return RankerReward(DivideAndConquerRanker(bed.labeler, batch_size=256), reward="score", name="claim_score")


def summarize(rows: list[dict]) -> str:
    """Markdown table: each arm's metrics as mean +- spread (half the range) over seeds, per test bed."""
    metrics = ("chair_response", "chair_mention", "recall", "words", "question_accuracy")
    metrics = [name for name in metrics if any(name in row for row in rows)]
    lines = ["| test bed | arm | " + " | ".join(metrics) + " | minutes |", "|---" * (len(metrics) + 3) + "|"]
    for bed, arm in dict.fromkeys((row["bed"], row["arm"]) for row in rows):
        runs = [row for row in rows if row["bed"] == bed and row["arm"] == arm]
        cells = []
        for name in metrics:
            values = [run[name] for run in runs if name in run]
            if not values:
                cells.append("")
                continue
            scale = 1 if name == "words" else 100
            spread = (max(values) - min(values)) / 2 * scale
            cells.append(f"{statistics.mean(values) * scale:.1f} ± {spread:.1f}")
        minutes = statistics.mean(run["seconds"] for run in runs) / 60
        lines.append(f"| {bed} | {arm} | " + " | ".join(cells) + f" | {minutes:.1f} |")
    return "\n".join(lines)


def run_arm(bed: TestBed, arm: str, prompts, options, seed: int, reward: RankerReward) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        if arm == "dpo":
            model, processor, extra = train_dpo(bed, prompts, options.generations, seed, Path(folder))
        else:
            form = None if arm == "grpo_score" else arm.removeprefix("grpo_rank_")
            model, processor, extra = train_grpo(
                bed, prompts, options.generations, seed, Path(folder), reward, form, options.grpo_lr
            )
    return {**extra, **bed.describe(model.eval(), processor, options.eval_prompts, EVAL_SEED + seed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--beds", nargs="+", default=list(TEST_BEDS), choices=list(TEST_BEDS))
    parser.add_argument("--prompts", type=int, default=256, help="Training prompts per arm (images).")
    parser.add_argument("--video-prompts", type=int, default=128, help="Training prompts per arm (video).")
    parser.add_argument("--generations", type=int, default=8, help="Policy samples per prompt.")
    parser.add_argument("--eval-prompts", type=int, default=400, help="Held-out scenes or clips per policy.")
    parser.add_argument("--grpo-lr", type=float, default=5e-5, help="Learning rate of every GRPO arm.")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--report", type=Path)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    rows = []
    begin = time.perf_counter()
    for name in options.beds:
        bed = TEST_BEDS[name]
        reward = oracle_reward(bed)
        count = options.prompts if name == "images" else options.video_prompts
        for seed in options.seeds:
            prompts = bed.prompts(count, seed)
            for arm in ("base", *options.arms):
                start = time.perf_counter()
                if arm == "base":
                    row = bed.describe(*load_vlm(bed.policy), options.eval_prompts, EVAL_SEED + seed)
                else:
                    row = run_arm(bed, arm, prompts, options, seed, reward)
                rows.append({"bed": name, "arm": arm, "seed": seed, **row, "seconds": time.perf_counter() - start})
                print(json.dumps(rows[-1]), flush=True)
    table = summarize(rows)
    minutes = (time.perf_counter() - begin) / 60
    print(table)
    if options.json:
        options.json.write_text(json.dumps(rows, indent=2))
    if options.report:
        options.report.write_text(
            f"# DPO vs GRPO vs GRPO_rank on the synthetic test beds\n\nTraining prompts per arm: {options.prompts} "
            f"scenes (images), {options.video_prompts} clips (video); {options.generations} policy samples per prompt; "
            f"{options.eval_prompts} held-out scenes or clips at T = 1.0; seeds {options.seeds}. Rates in %, spread = "
            f"half the range over seeds. {minutes:.1f} minutes in all on {cpu_name()}, {options.threads} threads."
            f"\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
