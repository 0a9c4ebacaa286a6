"""The iterative RLAIF-V recipe behind `recipes/iterative_dpo.py`: one small piece per job.

- `arguments`: `IterativeDPOArguments` (prompts, iterations, evaluation, Hub), parsed beside `FeedbackConfig`,
  `RLAIFVDPOConfig` and TRL's `ModelConfig`;
- `run`: the run folder (lock, manifest, stages run once);
- `prompts`, `preferences`: each iteration's prompts, feedback, pairs and reference log-probs;
- `training`: DPO from the last complete checkpoint, LoRA merged, the policy saved;
- `publishing`: cards, implicit-reward settings, Hub pushes;
- `summary`: metrics per policy and where everything went.
"""

import lazy_loader


# The public names are imported on first use; __init__.pyi lists them (and is what type checkers read).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
