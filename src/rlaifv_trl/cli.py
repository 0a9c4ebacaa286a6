"""The `rlaifv-trl` command line: `rlaifv-trl push RUN_DIR --dataset-repo ... --model-repo ...`."""

from __future__ import annotations

import argparse
import logging
import sys

from .hub import HubAccessError, HubPushError, push_run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlaifv-trl", description="RLAIF-V for TRL.")
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="Push a run's local artifacts (preference data, models) to the Hub.")
    push.add_argument("run_dir", help="The run's output folder (holding dataset/ and models/).")
    push.add_argument(
        "--dataset-repo", help="Dataset repository id for the preference data (one config per iteration)."
    )
    push.add_argument("--model-repo", help="Model repository id (one branch per iteration, main = latest).")
    push.add_argument("--private", action="store_true", help="Create the repositories as private.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "push":
        if not args.dataset_repo and not args.model_repo:
            _parser().error("push needs --dataset-repo, --model-repo or both")
        try:
            pushed = push_run(
                args.run_dir, dataset_repo=args.dataset_repo, model_repo=args.model_repo, private=args.private
            )
        except (HubAccessError, HubPushError, FileNotFoundError) as error:
            print(f"rlaifv-trl push: {error}", file=sys.stderr)
            return 1
        for target, commit in pushed.items():
            print(f"{target} {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
