"""Best-of-N with RLAIF-V self-feedback: a DPO-trained policy ranks its own sampled answers.

The policy samples N answers per (image, instruction) with identical settings; `LengthNormalizedRewardScorer` scores
each with the length-normalized implicit reward beta / T * sum_t log(pi(y_t) / pi_ref(y_t)) and keeps the best. The
prompt and image are encoded once for the N answers.

    python examples/best_of_n.py --policy me/llava-rlaif-v --reference llava-hf/llava-1.5-7b-hf --num_candidates 10

Without `--policy`, a tiny LLaVA is trained first on ShapesWorld (supervised descriptions that sometimes hallucinate,
then DPO on ground-truth pairs with `RLAIFVDPOTrainer`): about a minute on a CPU for the "tiny" preset, whose policy
barely looks at the image, several minutes for `--preset small --sft_steps 1000`, which does. Prompts are held-out ShapesWorld
scenes, whose objects are known, so the script reports how many hallucinated objects the picks mention, next to a
random pick and to the pick of the unnormalized reward.
"""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import TrlParser

from rlaifv_testbed import (
    build_tiny_vlm,
    evaluation_prompts,
    oracle_preference_dataset,
    shapes_objects,
    train_base_policy,
)
from rlaifv_trl import LengthNormalizedRewardScorer, RLAIFVDPOConfig, RLAIFVDPOTrainer
from rlaifv_trl.generation import generate_batch
from rlaifv_trl.metrics.chair import chair


@dataclass
class BestOfNArguments:
    policy: str | None = field(
        default=None,
        metadata={
            "help": "DPO-trained policy: a path, a Hub id or a PEFT adapter. Default: a tiny policy trained here."
        },
    )
    reference: str | None = field(
        default=None, metadata={"help": "The reference the policy was trained against (not needed for an adapter)."}
    )
    num_prompts: int = field(default=4, metadata={"help": "Held-out ShapesWorld scenes to answer."})
    num_candidates: int = field(default=8, metadata={"help": "Answers sampled per prompt (N)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the candidates."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest candidate, in tokens."})
    beta: float | None = field(
        default=None,
        metadata={
            "help": "The DPO beta the policy was trained with. Default: the one its implicit_reward.json records."
        },
    )
    preset: str = field(
        default="tiny",
        metadata={"help": "Size of the built-in policy: 'tiny' (a minute; it barely looks at the image) or 'small'."},
    )
    sft_steps: int = field(default=300, metadata={"help": "Supervised steps of the built-in policy (batch 32)."})
    dpo_steps: int = field(default=100, metadata={"help": "DPO steps of the built-in policy (batch 8)."})
    output_dir: str = field(default="best-of-n", metadata={"help": "Where the built-in models are saved."})
    output_json: str | None = field(default=None, metadata={"help": "Write the picks and the summary here."})
    seed: int = field(default=0, metadata={"help": "Seed of the data, the training and the sampling."})


def train_tiny_policy(args: BestOfNArguments) -> tuple[str, str]:
    """A ShapesWorld policy: SFT on descriptions that sometimes hallucinate, then DPO; returns (policy, reference)."""
    root = Path(args.output_dir)
    base = build_tiny_vlm(root / "base", "llava", args.preset, seed=args.seed)
    reference = train_base_policy(
        base, root / "sft", num_steps=args.sft_steps, batch_size=32, num_scenes=32 * args.sft_steps, seed=args.seed
    )
    config = RLAIFVDPOConfig(
        output_dir=str(root / "dpo"),
        learning_rate=1e-5,  # a tiny model trained for a few steps, not the paper's 5e-7
        max_steps=args.dpo_steps,
        per_device_train_batch_size=8,
        precompute_ref_log_probs=True,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
    )
    pairs = oracle_preference_dataset(8 * args.dpo_steps, start_seed=500_000, seed=args.seed)
    trainer = RLAIFVDPOTrainer(model=str(reference), args=config, train_dataset=pairs)
    trainer.train()
    trainer.save_model(root / "policy")
    return str(root / "policy"), str(reference)


def main(args: BestOfNArguments) -> dict:
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    policy, reference = (args.policy, args.reference) if args.policy else train_tiny_policy(args)
    scorer = LengthNormalizedRewardScorer.from_pretrained(policy, reference, beta=args.beta)
    unnormalized = LengthNormalizedRewardScorer(
        scorer.model, scorer.ref_model, scorer.processor, beta=scorer.beta, length_normalize=False
    )
    prompts = evaluation_prompts(args.num_prompts, seed=args.seed)
    picks, kinds = [], ("random", "best_of_n", "best_of_n_unnormalized")
    for row in prompts:
        image = row["images"][0]
        candidates = generate_batch(
            scorer.model,
            scorer.processor,
            [row["prompt"]],
            [row["images"]],
            num_return_sequences=args.num_candidates,
            do_sample=True,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
        )
        best = scorer.best_of_n(row["prompt"], image, candidates)
        best_unnormalized = unnormalized.best_of_n(row["prompt"], image, candidates)
        chosen = {
            "random": random.choice(candidates),
            "best_of_n": best.best,
            "best_of_n_unnormalized": best_unnormalized.best,
        }
        picks.append({"objects": row["objects"], "candidates": candidates, "scores": best.scores, **chosen})
        print(f"\n{row['prompt'][0]['content'][-1]['text']}  (objects: {', '.join(row['objects'])})")
        for candidate, score in zip(candidates, best.scores):
            marker = "*" if candidate == best.best else " "
            print(f" {marker} {score if score is not None else float('nan'):+.4f}  {candidate}")

    summary = {}
    for kind in kinds:
        answers = [pick[kind] or "" for pick in picks]
        result = chair(answers, [pick["objects"] for pick in picks], shapes_objects)
        summary[kind] = {
            "response_hallucination_rate": result.response_rate,
            "mention_hallucination_rate": result.mention_rate,
            "mean_words": statistics.mean(len(answer.split()) for answer in answers),
        }
    print("\n" + json.dumps(summary, indent=2))
    report = {"policy": policy, "reference": reference, "summary": summary, "picks": picks}
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    (script_args,) = TrlParser((BestOfNArguments,)).parse_args_and_config()
    main(script_args)
