# Copyright the rlaifv-trl contributors. Licensed under the Apache License, Version 2.0.
"""
Iterative RLAIF-V: for each iteration, sample -> divide -> conquer -> pairs -> reference log-probs -> publish the
data -> DPO -> evaluate -> publish the policy. The recipe reads top to bottom in `rlaifv_trl.scripts.iterative_dpo`
(`main`, `make_parser`), which `rlaifv-trl dpo` runs; this file runs the same code, so that the commands below work
from a clone as they always have. One copy of the recipe: the file, the command and
`accelerate launch -m rlaifv_trl.scripts.iterative_dpo` cannot drift apart.

```bash
# The embedded default on CPU (ShapesWorld scenes, small built-in VLMs), or: make demo
python recipes/iterative_dpo.py --config recipes/configs/tiny_cpu.yaml

# The paper's setting on 8 GPUs
accelerate launch --config_file recipes/accelerate/zero2.yaml recipes/iterative_dpo.py \
    --config recipes/configs/llava15_7b.yaml --prompt_dataset openbmb/RLAIF-V-Dataset \
    --dataset_repo me/rlaifv-llava15 --model_repo me/llava15-rlaifv
```

Every setting is a YAML key and a flag (`--num_candidates 4` overrides one setting and keeps the others). Running
the same command again after a crash or a kill continues where the run stopped, and with a larger `num_iterations` it
continues a finished run; a run with other settings in the same `output_dir` is refused, and so is a second run while
the first one is going.
"""

from rlaifv_trl.scripts.iterative_dpo import main, make_parser, run


__all__ = ["main", "make_parser"]

if __name__ == "__main__":
    run()
