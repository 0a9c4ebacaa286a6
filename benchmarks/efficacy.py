"""Efficacy as dominance over decoding: does training beat the base policy at *every* temperature?

A policy whose hallucinations are sampling noise looks aligned after anything that sharpens it, so a trained policy
only counts as better when it beats the base policy decoded at any temperature. For each policy this benchmark
describes held-out ShapesWorld scenes (seeds from `EVAL_SEED_OFFSET`, never used for training) greedily and at
temperatures 0.3, 0.5, 0.7 and 1.0, and reports CHAIR response and mention rates, recall and the garbled rate
(answers that name no object or hold text other than "There is a <colour> <shape>." sentences), and greedy answers to
POPE's adversarial questions (about the absent partner of an object in the scene). It also measures the labeler on
the claims the biased policy hallucinates (absent partners) and on the others.

Policies: the base (`--base`, the biased built-in policy by default), every iteration of the recipe runs trained
first with `--seeds` (the biased config plus `--recipe-args`, one run per seed in `--work-dir`) or given with `--runs`
(folders written by `recipes/iterative_dpo.py`), and the baselines and ablations of `--baselines`
(`efficacy_baselines.py`), built from the candidates the first run sampled from the base on its first iteration:

- `rs_sft`: rejection-sampling SFT, TRL's `SFTTrainer` on the labeler's best candidate per prompt;
- `gt_dpo`: DPO on pairs of the same candidates ranked by the ground truth (the feedback's ceiling);
- `confounded`: DPO on pairs whose answers come from different decodings (ablation of deconfounded sampling);
- `holistic`: DPO on pairs labeled by the labeler judging whole answers (ablation of divide and conquer);
- `grpo_rank`: the GRPO_rank recipe's tiny config on the same base;
- `best_of_n`: per scorer, the best of `--n` answers sampled at temperature 1.0 from a policy (the base and each run's
  last iteration), against the same policy's greedy answer: the labeler's claim score (RLAIF-V's, or crediting
  confirmed claims), the policy labeling its own claims, the DPO policy's implicit reward and its mean log-probability.

For each trained policy and temperature, `dominated_by` lists the base temperatures that are at least as good on
CHAIR response, CHAIR mention and recall at once (empty: the trained point dominates decoding). `--report DIR` writes
`report.md` (the tables, pooled over seeds) and `efficacy.png` (CHAIR response against recall, each policy from greedy
to temperature 1.0 against the base's curve), and prints the report instead of the JSON figures.

The whole study, as in docs/efficacy.md:

    python benchmarks/efficacy.py --seeds 42 43 44 --recipe-args "--max_claim_drop 0" \
        --baselines rs_sft gt_dpo confounded holistic grpo_rank best_of_n --report runs/efficacy --json efficacy.json
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import benchmark_parser, parse_options, report
from efficacy_baselines import BASELINES, CONFIG, best_of_n_rows, build_baseline
from efficacy_report import markdown_report, plot
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed.adversarial import claim_labeling_accuracy
from rlaifv_testbed.bias import COOCCURRENCE
from rlaifv_testbed.builtin import BUILTIN_BIASED_POLICY, BUILTIN_LABELER
from rlaifv_testbed.data import evaluation_prompts
from rlaifv_testbed.recipe import shapesworld_pope_adversarial
from rlaifv_testbed.shapes import COLORS, SHAPES, shapes_objects
from rlaifv_trl.generation import generate_batch
from rlaifv_trl.loading import resolve_model_name
from rlaifv_trl.metrics.chair import chair


TEMPERATURES = (0.0, 0.3, 0.5, 0.7, 1.0)
METRICS = ("chair_response", "chair_mention", "recall", "garbled")
_SENTENCE = re.compile(rf"There is an? ({'|'.join(COLORS)}) ({'|'.join(SHAPES)})\.")


def garbled(answer: str) -> bool:
    """Whether an answer names no object or holds anything but "There is a <colour> <shape>." sentences."""
    return not _SENTENCE.search(answer) or bool(_SENTENCE.sub("", answer).strip())


def score(answers: list[str], objects: list[list[str]]) -> dict[str, float]:
    """CHAIR response and mention rates, recall and garbled rate of answers against their scenes' objects, and
    `partner_named`: of the answers to scenes holding a trigger without its partner, those naming an absent partner."""
    result = chair(answers, objects, shapes_objects)
    partners = [{COOCCURRENCE[name] for name in names if name in COOCCURRENCE} - set(names) for names in objects]
    named = [bool(absent & set(shapes_objects(answer))) for answer, absent in zip(answers, partners) if absent]
    return {
        "chair_response": result.response_rate,
        "chair_mention": result.mention_rate,
        "recall": result.recall,
        "garbled": sum(map(garbled, answers)) / len(answers),
        "partner_named": sum(named) / max(len(named), 1),
    }


def decode(model, processor, prompts, temperature: float, seed: int, batch_size: int = 50) -> list[str]:
    """One answer per prompt row; a temperature of 0 decodes greedily."""
    generation = {"max_new_tokens": 48}
    generation.update({"do_sample": True, "temperature": temperature} if temperature else {"do_sample": False})
    torch.manual_seed(seed)
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = prompts[start : start + batch_size]
        answers += generate_batch(model, processor, rows["prompt"], rows["images"], **generation)
    return answers


def decoding_table(path: str | Path, prompts, temperatures, seed: int) -> dict[str, dict]:
    """The metrics of a policy at each temperature ("greedy" for 0), and its greedy adversarial POPE metrics."""
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    table: dict[str, dict] = {}
    for temperature in temperatures:
        answers = decode(model, processor, prompts, temperature, seed)
        table[_key(temperature)] = score(answers, prompts["objects"])
    table["pope_adversarial"] = shapesworld_pope_adversarial(
        model, processor, num_prompts=len(prompts), temperature=0.0, max_new_tokens=4, seed=seed
    )
    return table


def dominated_by(point: dict[str, float], base: dict[str, dict[str, float]]) -> list[str]:
    """The base temperatures at least as good as `point` on CHAIR response, CHAIR mention and recall at once."""
    return [
        key
        for key, other in base.items()
        if other["chair_response"] <= point["chair_response"]
        and other["chair_mention"] <= point["chair_mention"]
        and other["recall"] >= point["recall"]
    ]


def recipe_policies(run: Path) -> dict[str, Path]:
    """The policies of a recipe run, by iteration: `<run>/iteration-<k>`."""
    folders = sorted((run / "models").glob("iteration-*"), key=lambda folder: int(folder.name.split("-")[1]))
    return {f"{run.name}/{folder.name}": folder for folder in folders if (folder / "config.json").is_file()}


def train_runs(seeds: list[int], work_dir: Path, recipe_args: list[str]) -> list[Path]:
    """The recipe's runs of `--config` (plus `recipe_args`), one per seed, in `<work_dir>/rlaifv-s<seed>`. The recipe
    runs every time: it does nothing for a finished run, resumes an interrupted one and refuses a folder trained with
    other settings (its manifest), so a run folder is never reused for settings it was not trained with."""
    recipe = [sys.executable, str(CONFIG.parents[2] / "recipes" / "iterative_dpo.py"), "--config", str(CONFIG)]
    runs = []
    for seed in seeds:
        run = work_dir / f"rlaifv-s{seed}"
        subprocess.run([*recipe, *recipe_args, "--output_dir", str(run), "--seed", str(seed)], check=True)
        runs.append(run)
    return runs


def main() -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--base", default=BUILTIN_BIASED_POLICY, help="The base policy (name or folder).")
    parser.add_argument("--labeler", default=BUILTIN_LABELER, help="The labeler measured on the biased claims.")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="Recipe output folders.")
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[], help="Train the recipe (the biased config) once per seed first."
    )
    parser.add_argument(
        "--recipe-args", default="", help="Further recipe arguments of the trained runs (one string, shell syntax)."
    )
    parser.add_argument("--scenes", type=int, default=300, help="Held-out scenes described per temperature.")
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES))
    parser.add_argument("--baselines", nargs="*", default=[], choices=[*BASELINES, "best_of_n"])
    parser.add_argument("--n", type=int, default=8, help="Samples per scene of Best-of-N.")
    parser.add_argument("--bon-scenes", type=int, default=100, help="Held-out scenes of Best-of-N (the first ones).")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("runs/efficacy"),
        help="Where runs and baselines go; a baseline already trained there is reused (use a new folder after "
        "changing the config).",
    )
    parser.add_argument("--report", type=Path, default=None, help="Write report.md and efficacy.png in this folder.")
    parser.add_argument("--seed", type=int, default=0)
    options = parse_options(parser)
    prompts = evaluation_prompts(options.scenes, seed=options.seed)
    base_path = resolve_model_name(options.base)

    started = time.perf_counter()
    timings: dict[str, float] = {}
    runs = list(options.runs)
    if options.seeds:
        recipe_args = ["--model_name_or_path", str(options.base), *shlex.split(options.recipe_args)]
        runs += train_runs(options.seeds, options.work_dir, recipe_args)
        timings["recipe_runs"] = time.perf_counter() - started
    policies: dict[str, dict] = {}
    tick = time.perf_counter()
    labeler = resolve_model_name(options.labeler)
    labeler_model = AutoModelForImageTextToText.from_pretrained(labeler).eval()
    claims = claim_labeling_accuracy(labeler_model, AutoProcessor.from_pretrained(labeler), num_scenes=options.scenes)
    base = decoding_table(base_path, prompts, options.temperatures, options.seed)
    policies["base"] = base
    timings["base"] = time.perf_counter() - tick
    trained = {name: path for run in runs for name, path in recipe_policies(run).items()}
    for baseline in BASELINES:
        if baseline in options.baselines:
            tick = time.perf_counter()
            trained[baseline] = build_baseline(baseline, runs[0], options.work_dir, options.base, options.labeler)
            timings[f"{baseline}_training"] = time.perf_counter() - tick
    for name, path in trained.items():
        tick = time.perf_counter()
        table = decoding_table(path, prompts, options.temperatures, options.seed)
        for key in map(_key, options.temperatures):
            table[key]["dominated_by"] = dominated_by(
                table[key], {k: base[k] for k in map(_key, options.temperatures)}
            )
        policies[name] = table
        timings[name] = time.perf_counter() - tick
    figures = {
        "base": options.base,
        "scenes": options.scenes,
        "first_scene_seed": prompts["scene_seed"][0],
        "temperatures": options.temperatures,
        "labeler": options.labeler,
        "labeler_claim_accuracy": claims,
        "policies": policies,
    }
    if "best_of_n" in options.baselines:
        tick = time.perf_counter()
        last = {f"{run.name}/last": list(recipe_policies(run).values())[-1] for run in runs}
        figures["best_of_n"] = best_of_n_rows(
            base_path, last, prompts.select(range(options.bon_scenes)), options.n, options.seed, score, decode,
            options.labeler,
        )  # fmt: skip
        timings["best_of_n"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    figures["wall_seconds"] = {key: round(value, 1) for key, value in timings.items()}
    if not options.report:
        return report(figures, options.json)
    options.report.mkdir(parents=True, exist_ok=True)
    text = markdown_report(figures)
    (options.report / "report.md").write_text(text)
    plot(figures, options.report / "efficacy.png")
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2))
    print(text + f"\nReport: {options.report / 'report.md'}, plot: {options.report / 'efficacy.png'}")
    return figures


def _key(temperature: float) -> str:
    return "greedy" if not temperature else f"T={temperature:g}"


if __name__ == "__main__":
    main()
