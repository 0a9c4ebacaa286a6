"""`kill_while_saving.py RECIPE ARGS...`: run the recipe script with its arguments and SIGKILL it in the middle of saving the last checkpoint
of the first training: the weights, optimizer and scheduler of that checkpoint are written, its RNG state and
`trainer_state.json` are not. Used by tests/test_recipe.py."""

import os
import runpy
import signal
import sys

from transformers import Trainer


save_rng_state = Trainer._save_rng_state


def save_rng_state_or_die(self, output_dir):
    if self.state.global_step == self.state.max_steps:
        os.kill(os.getpid(), signal.SIGKILL)
    return save_rng_state(self, output_dir)


Trainer._save_rng_state = save_rng_state_or_die  # fault injection: a kill at a real point of a real save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
