"""Recipe scripts in their own processes, to be killed and resumed for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).parents[2]


def run_recipe_process(
    argv: list[str],
    launcher: list[str] | None = None,
    offline: bool = True,
    script: str = "recipes/iterative_dpo.py",
    hub_endpoint: str | None = None,
    command: list[str] | None = None,
) -> subprocess.Popen:
    """`python SCRIPT ARGV` in its own process group (the loopback Hub, or `hub_endpoint`, is reachable unless
    `offline`); `launcher` is a script that runs the recipe (e.g. tests/scripts/kill_while_saving.py); `command`
    replaces `SCRIPT` (e.g. `["-m", "rlaifv_trl.cli", "dpo"]`)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # bitwise-reproducible CPU math across processes
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    if offline:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if hub_endpoint:
        env.update(HF_ENDPOINT=hub_endpoint)
    return subprocess.Popen(
        [sys.executable, *(launcher or []), *(command or [str(ROOT / script)]), *argv],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def finish(process: subprocess.Popen) -> str:
    """The output of a recipe process that must end with exit code 0."""
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output
