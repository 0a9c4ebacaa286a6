"""`kill_while_saving.py RECIPE ARGS...`: run the recipe script with its arguments and SIGKILL it while it saves the
last checkpoint of its first training. Where, `KILL_AT` says:

- `rng_state` (default): in the middle of the save: the weights, optimizer and scheduler of that checkpoint are
  written, its RNG state and `trainer_state.json` are not;
- `after_checkpoint`: once the checkpoint is written whole (`trainer_state.json` last), before anything else runs
  (callbacks, the next stage).

Used by tests/test_recipe.py and tests/test_grpo_rank_recipe.py."""

import os
import runpy
import signal
import sys

from transformers import Trainer, TrainerState


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("KILL_AT", "rng_state") == "rng_state":
    save_rng_state = Trainer._save_rng_state

    def save_rng_state_or_die(self, output_dir):
        if self.state.global_step == self.state.max_steps:
            kill()
        return save_rng_state(self, output_dir)

    Trainer._save_rng_state = save_rng_state_or_die  # fault injection: a kill at a real point of a real save
else:
    save_to_json = TrainerState.save_to_json

    def save_to_json_then_die(self, json_path):
        save_to_json(self, json_path)
        if self.global_step == self.max_steps and os.path.basename(os.path.dirname(json_path)).startswith(
            "checkpoint-"
        ):
            kill()

    TrainerState.save_to_json = save_to_json_then_die

sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
