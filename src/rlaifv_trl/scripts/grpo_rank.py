# Copyright the rlaifv-trl contributors. Licensed under the Apache License, Version 2.0.
"""
GRPO_rank (Oracle-RLAIF): for each iteration, sample `num_generations` answers per prompt online -> the oracle ranks
them -> rank-aware advantages -> clipped surrogate with a KL to the iteration's starting policy -> evaluate.

```bash
# On CPU: ShapesWorld scenes, the built-in policy, the built-in labeler as divide-and-conquer oracle
rlaifv-trl grpo-rank --config recipes/configs/grpo_rank_tiny_cpu.yaml

# On 8 GPUs, a listwise oracle (accelerate's options go to accelerate launch, the others to the recipe)
rlaifv-trl grpo-rank --config_file recipes/accelerate/zero2.yaml \
    --model_name_or_path Qwen/Qwen2-VL-7B-Instruct --prompt_dataset openbmb/RLAIF-V-Dataset \
    --oracle listwise --oracle_model_name_or_path Qwen/Qwen2-VL-72B-Instruct --output_dir grpo-rank
```

Every setting is a YAML key and a flag. Running the same command again after a crash continues where the run
stopped, and with a larger `num_rounds` (the method's iterations: TRL's `num_iterations` is GRPO's μ) it continues a
finished run; a run with other settings in the same `output_dir` is refused.
"""

from __future__ import annotations

from trl import ModelConfig, TrlParser, get_peft_config

from rlaifv_trl import GRPORankConfig
from rlaifv_trl.evaluation import PolicyEvaluation
from rlaifv_trl.loading import ModelLoading
from rlaifv_trl.recipe import RecipeRun, RunSummary, run_settings
from rlaifv_trl.recipe.grpo_rank import GRPORankArguments, oracle_reward, train_grpo_rank
from rlaifv_trl.scripts.console import print_summary, quiet_progress_bars


def main(script_args: GRPORankArguments, training_args: GRPORankConfig, model_args: ModelConfig) -> RunSummary:
    if model_args.model_name_or_path is None:
        raise ValueError("Set model_name_or_path: the policy to align (a Hub id, a folder, or builtin:<name>)")
    policy_loading = ModelLoading.from_model_config(model_args, training_args.trust_remote_code)
    policy_loading.check()
    peft_config = get_peft_config(model_args)
    evaluate = PolicyEvaluation.from_arguments(
        script_args, training_args.seed, policy_loading, disable_tqdm=training_args.disable_tqdm
    )

    settings = run_settings(script_args, None, training_args, model_args)
    output_dir, base_model = training_args.output_dir, model_args.model_name_or_path
    with RecipeRun(output_dir, settings, base_model, num_iterations=script_args.num_rounds) as run:
        reward = oracle_reward(script_args, model_args.model_name_or_path, policy_loading)
        run.stage(0, "evaluate", evaluate, run.policy(0))  # the base policy
        for k in range(1, script_args.num_rounds + 1):  # iteration k trains the policy of k - 1 into policy k
            run.stage(
                k, "train", train_grpo_rank, run, k, script_args, training_args, policy_loading, reward, peft_config
            )
            run.stage(k, "evaluate", evaluate, run.policy(k))
        summary = RunSummary.of(run, script_args.num_rounds, None, None)
        summary.write()
    return summary


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((GRPORankArguments, GRPORankConfig, ModelConfig), prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> None:
    """The recipe on `argv` (the command line by default): parse, run, print the summary on the main process."""
    arguments = make_parser(prog).parse_args_and_config(argv)
    quiet_progress_bars()
    print_summary(main(*arguments))


if __name__ == "__main__":
    run()
