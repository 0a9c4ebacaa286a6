"""`rlaifv-trl dpo` and `rlaifv-trl grpo-rank`: a recipe script under `accelerate launch`, the way `trl dpo` runs TRL's
scripts.

The arguments are parsed here first, so that `--help`, an unknown YAML key or a refused setting answers at once. The
flags that are no setting of the recipe go to `accelerate launch` (`--num_processes 8`, `--config_file zero2.yaml`,
`--mixed_precision bf16`, ...), the others to the recipe, which runs as `python -m rlaifv_trl.scripts.<script>` in
as many processes as accelerate's configuration says (one by default, without an accelerate config).
"""

from __future__ import annotations

import importlib
import subprocess
import sys


def launch_recipe(script: str, argv: list[str], prog: str) -> int:
    """Run `rlaifv_trl.scripts.<script>` on `argv` under `accelerate launch`; returns its exit status (2, with the
    reason on stderr, for settings refused before launching)."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    module = f"rlaifv_trl.scripts.{script}"
    parser = importlib.import_module(module).make_parser(prog)
    try:
        *_, config_remaining, launch_args = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
        if config_remaining:
            raise ValueError(f"unknown keys in the config file: {' '.join(config_remaining)}")
        accelerate_args, unknown = launch_command_parser().parse_known_args(
            [*launch_args, "--module", module, *without_subsequence(argv, launch_args)]
        )
        if unknown or accelerate_args.training_script != module:  # a stray value reads as the script
            unknown = unknown or launch_args
            raise ValueError(f"unknown flags, neither settings nor accelerate launch options: {' '.join(unknown)}")
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    try:
        launch_command(accelerate_args)
    except subprocess.CalledProcessError as error:  # the recipe has said why on its own stderr
        return error.returncode
    return 0


def without_subsequence(items: list[str], subsequence: list[str]) -> list[str]:
    """`items` less `subsequence`, whose elements appear in `items` in the same order."""
    rest, remaining = [], iter(subsequence)
    wanted = next(remaining, None)
    for item in items:
        if wanted is not None and item == wanted:
            wanted = next(remaining, None)
        else:
            rest.append(item)
    return rest
