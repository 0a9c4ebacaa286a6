"""The `rlaifv-trl` command line:

- `rlaifv-trl dpo --config recipes/configs/tiny_cpu.yaml [flags]`: the iterative RLAIF-V recipe
  (`rlaifv_trl.scripts.iterative_dpo`), and `rlaifv-trl grpo-rank --config ... [flags]`: the GRPO_rank recipe
  (`rlaifv_trl.scripts.grpo_rank`), each under `accelerate launch` as `trl dpo` runs TRL's scripts (see
  `rlaifv_trl.scripts.launch`): every flag is a setting of the recipe or an option of `accelerate launch`;
- `rlaifv-trl push RUN_DIR --dataset-repo ... --model-repo ...` (a recipe run's manifest and summary then record the
  commits);
- `rlaifv-trl evaluate MODEL --benchmark {pope,chair,<registered>} [--dataset ...] [--output-dir ...]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


# Subcommand -> (module of rlaifv_trl.scripts, help).
RECIPES = {
    "dpo": ("iterative_dpo", "Run the iterative RLAIF-V recipe: sample, label, pairs, DPO, evaluate, per iteration."),
    "grpo-rank": ("grpo_rank", "Run the GRPO_rank recipe: online GRPO on an oracle's rankings, per iteration."),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlaifv-trl", description="RLAIF-V for TRL.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in RECIPES.items():
        # Their flags are the recipe's (see `rlaifv-trl dpo --help`), parsed by its own TrlParser.
        commands.add_parser(name, help=help_text, add_help=False)
    push = commands.add_parser("push", help="Push a run's local artifacts (preference data, models) to the Hub.")
    push.add_argument("run_dir", help="The run's output folder (holding dataset/ and models/).")
    push.add_argument(
        "--dataset-repo", help="Dataset repository id for the preference data (one config per iteration)."
    )
    push.add_argument("--model-repo", help="Model repository id (one branch per iteration, main = latest).")
    push.add_argument("--private", action="store_true", help="Create the repositories as private.")
    _add_evaluate(commands)
    return parser


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="Measure a model's hallucination on a benchmark; writes report.json and report.md.",
        description="Answer a hallucination benchmark with a vision-language model and score the answers (POPE: "
        "yes/no existence questions; CHAIR: object mentions in descriptions; a benchmark an installed package "
        "registers, e.g. the test bed's shapesworld: both, on generated scenes).",
    )
    evaluate.add_argument("model", help="Model folder, Hub id or a registered name (e.g. builtin:<name>).")
    evaluate.add_argument(
        "--benchmark", required=True, help="pope, chair, or a registered benchmark (the test bed's shapesworld)."
    )
    evaluate.add_argument(
        "--dataset",
        help="Local dataset (save_to_disk folder, parquet/json/csv file) or Hub id. pope: POPE's schema (default "
        "lmms-lab/POPE); chair: columns image, objects and optionally question or prompt; not for registered ones.",
    )
    evaluate.add_argument("--split", help="Dataset split (default: the only split, else 'test').")
    evaluate.add_argument(
        "--num-prompts", type=int, help="Rows to answer: a seeded random subset (default: all; registered: 200)."
    )
    evaluate.add_argument("--temperature", type=float, default=0.0, help="Sampling temperature (0: greedy).")
    evaluate.add_argument("--max-new-tokens", type=int, default=64)
    evaluate.add_argument("--batch-size", type=int, default=8)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--vocabulary", default="coco", help="Object vocabulary of chair: coco or a registered one (shapesworld)."
    )
    evaluate.add_argument("--output-dir", default="evaluation", help="Where report.json and report.md are written.")
    evaluate.add_argument("--revision", default="main", help="Model revision (Hub models).")
    evaluate.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16", "float16"])
    evaluate.add_argument("--trust-remote-code", action="store_true")
    evaluate.add_argument(
        "--image-root",
        help="Folder that images given by path may be read from (default: the dataset's folder when it is local).",
    )
    evaluate.add_argument("--allow-image-urls", action="store_true", help="Fetch images given as http(s) URLs.")
    evaluate.add_argument(
        "--max-image-pixels", type=int, help="Largest image, in pixels (default: 64000000); larger ones are skipped."
    )


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation.hallucination import EvaluationRequest, run_evaluation

    for name in ("num_prompts", "max_new_tokens", "batch_size", "max_image_pixels"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"rlaifv-trl evaluate: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    request = EvaluationRequest(
        model=args.model, benchmark=args.benchmark, dataset=args.dataset, split=args.split,
        num_prompts=args.num_prompts, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, seed=args.seed, vocabulary=args.vocabulary, output_dir=args.output_dir,
        revision=args.revision, dtype=args.dtype, trust_remote_code=args.trust_remote_code, image_root=args.image_root,
        allow_image_urls=args.allow_image_urls, max_image_pixels=args.max_image_pixels,
    )  # fmt: skip
    try:
        report = run_evaluation(request)
    except (ValueError, FileNotFoundError) as error:
        print(f"rlaifv-trl evaluate: {error}", file=sys.stderr)
        return 1
    for name, result in report["results"].items():
        shown = ", ".join(f"{key}={value:.4f}" for key, value in result["metrics"].items() if isinstance(value, float))
        print(f"{name}: {shown}")
    print(f"Report: {args.output_dir}/report.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    # Each command imports what it needs when it runs, so that `rlaifv-trl --help` answers at once.
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command in RECIPES:
        from .scripts.launch import launch_recipe

        script, _ = RECIPES[args.command]
        return launch_recipe(script, argv[argv.index(args.command) + 1 :], prog=f"rlaifv-trl {args.command}")
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "push":
        if not args.dataset_repo and not args.model_repo:
            parser.error("push needs --dataset-repo, --model-repo or both")
        return _push(args)
    return 0


def _push(args: argparse.Namespace) -> int:
    """Push a run folder, holding its lock (a running run is not pushed), and record the commits in its manifest."""
    from .hub import HubAccessError, HubPushError, push_run
    from .recipe.publishing import record_later_push
    from .run_lock import RunLock, RunLockedError

    if not Path(args.run_dir).is_dir():
        print(f"rlaifv-trl push: {args.run_dir} is not a folder", file=sys.stderr)
        return 1
    try:
        with RunLock(args.run_dir):
            pushed = push_run(
                args.run_dir, dataset_repo=args.dataset_repo, model_repo=args.model_repo, private=args.private
            )
            record_later_push(args.run_dir, pushed, args.dataset_repo, args.model_repo)
    except (RunLockedError, HubAccessError, HubPushError, FileNotFoundError) as error:
        print(f"rlaifv-trl push: {error}", file=sys.stderr)
        return 1
    for target, commit in pushed.items():
        print(f"{target} {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
