"""The recipes behind `rlaifv-trl dpo` and `rlaifv-trl grpo-rank` (scripts in `rlaifv_trl.scripts`): one small piece
per job.

- `shared_arguments`: `PromptArguments`, `EvaluationArguments` and `HubArguments`, the settings both recipes share;
- `arguments`: `IterativeDPOArguments` (those three, iterations, published preference data, checkpoint selection),
  parsed beside `FeedbackConfig`, `RLAIFVDPOConfig` and TRL's `ModelConfig`;
- `grpo_rank`: `GRPORankArguments` (prompts, evaluation, iterations, the oracle) and the GRPO_rank stage;
- `run`: the run folder (lock, manifest, stages run once);
- `prompts`, `preferences`: each iteration's prompts, feedback, pairs and reference log-probs;
- `training`: DPO from the last complete checkpoint, LoRA merged, the policy saved;
- `publishing`: cards, implicit-reward settings, Hub pushes;
- `summary`: metrics per policy and where everything went.
"""

import lazy_loader


# The public names are imported on first use; __init__.pyi lists them (and is what type checkers read).
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
