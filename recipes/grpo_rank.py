# Copyright the rlaifv-trl contributors. Licensed under the Apache License, Version 2.0.
"""
GRPO_rank (Oracle-RLAIF): for each iteration, sample `num_generations` answers per prompt online -> the oracle ranks
them -> rank-aware advantages -> clipped surrogate with a KL to the iteration's starting policy -> evaluate. The
recipe reads top to bottom in `rlaifv_trl.scripts.grpo_rank` (`main`, `make_parser`), which `rlaifv-trl grpo-rank`
runs; this file runs the same code, so that the commands below work from a clone as they always have.

```bash
# On CPU: ShapesWorld scenes, the built-in policy, the built-in labeler as divide-and-conquer oracle
python recipes/grpo_rank.py --config recipes/configs/grpo_rank_tiny_cpu.yaml

# On 8 GPUs, a listwise oracle
accelerate launch --config_file recipes/accelerate/zero2.yaml recipes/grpo_rank.py \
    --model_name_or_path Qwen/Qwen2-VL-7B-Instruct --prompt_dataset openbmb/RLAIF-V-Dataset \
    --oracle listwise --oracle_model_name_or_path Qwen/Qwen2-VL-72B-Instruct --output_dir grpo-rank
```

Every setting is a YAML key and a flag. Running the same command again after a crash continues where the run
stopped, and with a larger `num_rounds` it continues a finished run; a run with other settings in the same
`output_dir` is refused.
"""

from rlaifv_trl.scripts.grpo_rank import main, make_parser, run


__all__ = ["main", "make_parser"]

if __name__ == "__main__":
    run()
