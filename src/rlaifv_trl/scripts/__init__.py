"""The recipes as scripts, laid out like TRL's `trl/scripts/`: each module has `make_parser(prog=None)` (a
`TrlParser`: every setting is a YAML key of `--config` and a flag), `main(...)` (the recipe, on the parsed arguments,
returning its `RunSummary`) and `run(argv=None)` (parse, run, print the summary), and runs as a module.

- `iterative_dpo`: `rlaifv-trl dpo`, `python recipes/iterative_dpo.py`,
  `accelerate launch -m rlaifv_trl.scripts.iterative_dpo`;
- `grpo_rank`: `rlaifv-trl grpo-rank`, `python recipes/grpo_rank.py`, `accelerate launch -m rlaifv_trl.scripts.grpo_rank`;
- `launch`: how `rlaifv-trl dpo` / `grpo-rank` run a recipe under `accelerate launch`;
- `console`: what a recipe shows on the terminal.

Importing this package imports none of them.
"""
