"""GRPO against RLAIF-V's self-feedback reward: TRL's `GRPOTrainer` with `LengthNormalizedRewardScorer` as reward.

The reward of an answer is the length-normalized implicit reward of a DPO-trained policy (against its reference),
beta / T * sum_t log(pi(y_t) / pi_ref(y_t)): the same signal RLAIF-V uses for Best-of-N, here as an online reward.

    python examples/grpo_with_rlaifv_reward.py --model_name_or_path llava-hf/llava-1.5-7b-hf \\
        --reward_policy me/llava-rlaif-v --reward_reference llava-hf/llava-1.5-7b-hf --output_dir grpo-rlaif-v

Without the model arguments, tiny random LLaVA stand-ins are built (this shows the plumbing, not the learning):

    python examples/grpo_with_rlaifv_reward.py --output_dir grpo-tiny --use_cpu true --bf16 false --max_steps 5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trl import GRPOConfig, GRPOTrainer, TrlParser

from rlaifv_testbed import build_tiny_vlm, prompt_dataset
from rlaifv_trl import LengthNormalizedRewardScorer


@dataclass
class ScriptArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The vision-language model to train. Default: a tiny LLaVA built here."}
    )
    reward_policy: str | None = field(
        default=None,
        metadata={"help": "DPO-trained policy whose implicit reward scores the answers (path, Hub id or adapter)."},
    )
    reward_reference: str | None = field(
        default=None, metadata={"help": "The reference of `reward_policy` (not needed for an adapter)."}
    )
    reward_beta: float = field(default=0.1, metadata={"help": "The DPO beta `reward_policy` was trained with."})
    num_prompts: int = field(default=64, metadata={"help": "ShapesWorld description prompts to train on."})


def tiny_stand_ins(root: Path) -> tuple[str, str, str]:
    """Tiny random LLaVA models: the policy to train, and a reward policy with its reference."""
    return tuple(
        str(build_tiny_vlm(root / name, "llava", "tiny", seed=seed))
        for seed, name in enumerate(("policy", "reward", "reference"))
    )


def main(script_args: ScriptArguments, training_args: GRPOConfig) -> GRPOTrainer:
    model, reward_policy, reward_reference = (
        script_args.model_name_or_path,
        script_args.reward_policy,
        script_args.reward_reference,
    )
    if model is None or reward_policy is None:
        stand_ins = tiny_stand_ins(Path(training_args.output_dir) / "models")
        model = model or stand_ins[0]
        reward_policy, reward_reference = reward_policy or stand_ins[1], reward_reference or stand_ins[2]
    scorer = LengthNormalizedRewardScorer.from_pretrained(
        reward_policy, reward_reference, beta=script_args.reward_beta
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=scorer,
        args=training_args,
        train_dataset=prompt_dataset(script_args.num_prompts),  # columns `prompt` and `images`
    )
    trainer.train()
    for log in trainer.state.log_history:
        if "reward" in log:
            print(f"step {log['step']}: reward {log['reward']:+.5f} (std {log.get('reward_std', float('nan')):.5f})")
    return trainer


if __name__ == "__main__":
    main(*TrlParser((ScriptArguments, GRPOConfig)).parse_args_and_config())
