"""Which scorer picks the least hallucinated of N sampled answers? Best-of-N on held-out ShapesWorld scenes.

Samples `--n` answers per scene at temperature 1.0 from the last iteration of a recipe run (`--run`, the folder the
recipe wrote: `models/iteration-K`), scores every answer token under that policy, the previous iteration and the base
policy, and compares the answer each scorer picks: CHAIR response / mention rates, recall and length of the picks, and
the pairwise ranking accuracy of each score against the true number of hallucinated objects (pairs of one scene's
answers with different counts; ties count half). Scenes use seeds `--start-seed` onwards, which training never sees
(the recipe draws seeds below 1000 and evaluates on seeds from 1,000,000).

Scores (higher is better; beta > 0 only scales the implicit reward, so it never changes a ranking):

- `implicit_reward[ref]`: beta / T * sum_t log(pi / pi_ref) over the T answer tokens with the end-of-turn tokens
  (`<|im_end|>\\n`), the scorer's default; `_sum` without 1/T, `_content` without the end-of-turn tokens,
  `_clip` with per-token log-ratios clipped to [-1, 1], `_sqrt` divided by sqrt(T).
- `policy_mean` / `policy_sum` / `policy_content`: mean or summed log pi; `ref_mean[ref]`: mean log pi_ref.
- `policy_mean+L*ir[ref]`: mean log pi + L * mean log(pi / pi_ref); `policy_min`: the least likely answer token.
- `oracle`: fewest hallucinated objects, then most true ones.
- `mode=...`: `LengthNormalizedRewardScorer(mode=...).score` itself (must pick as the matching offline score).

A control scores templated answers that were not sampled from the policy (the true description, one object left
out, one absent object added): there the implicit reward does rank hallucinations low, so its failure above comes from
ranking the policy's own samples (a sampled token's expected log(pi / pi_ref) is the per-position KL, >= 0).

    python benchmarks/best_of_n_study.py --run runs/demo --scenes 200 --json best_of_n_study.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import COLORS, SHAPES, ShapesWorld, prompt_dataset, shapes_objects
from rlaifv_testbed.shapes import describe
from rlaifv_trl import LengthNormalizedRewardScorer
from rlaifv_trl.feedback.sampling import CandidateSampler
from rlaifv_trl.loading import resolve_model_name
from rlaifv_trl.metrics.chair import chair


Candidate = dict[str, object]


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="Recipe output folder with models/iteration-K.")
    parser.add_argument("--base", default="builtin:shapesworld-llava", help="The base policy (iteration 0).")
    parser.add_argument("--iteration", type=int, help="Policy iteration to sample from (default: the last).")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--start-seed", type=int, default=900_000, help="Seed of the first scene.")
    parser.add_argument("--sampling-seed", type=int, default=0, help="Seed of the candidates and of the prompts.")
    parser.add_argument("--pick-seed", type=int, default=0, help="Seed of the random pick.")
    parser.add_argument("--n", type=int, default=8, help="Candidates per scene.")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="Write the figures (and every candidate's scores) to this file.")
    return parser.parse_args()


def load(path: str | Path) -> AutoModelForImageTextToText:
    return AutoModelForImageTextToText.from_pretrained(resolve_model_name(path)).eval()


def token_log_probs(scorer: LengthNormalizedRewardScorer, rows, answers: list[list[str]]) -> list[list[dict]]:
    """Per-token log pi and log pi_ref (and the token ids) of every answer, as the scorer computes them."""
    prompts, images, completions = [], [], []
    for row, candidates in zip(rows, answers):
        for answer in candidates:
            prompts.append(row["prompt"])
            images.append(row["images"])
            completions.append(answer)
    tokens = scorer.token_log_probs(prompts, images, completions)
    flat = iter(tokens)
    return [[next(flat) for _ in candidates] for candidates in answers]


def scores_of(answer: dict, suffix: int) -> dict[str, float]:
    """Every score of one answer from its per-token log-probabilities (see the module docstring)."""
    policy = answer["policy"]
    out: dict[str, float] = {
        "policy_mean": float(policy.mean()),
        "policy_sum": float(policy.sum()),
        "policy_content": float(policy[:-suffix].mean()) if len(policy) > suffix else float(policy.mean()),
        "policy_min": float(policy.min()),
    }
    for name, ref in answer["refs"].items():
        ratio = policy - ref
        content = ratio[:-suffix] if len(ratio) > suffix else ratio
        out[f"implicit_reward[{name}]"] = float(ratio.mean())
        out[f"implicit_reward_sum[{name}]"] = float(ratio.sum())
        out[f"implicit_reward_content[{name}]"] = float(content.mean())
        out[f"implicit_reward_clip[{name}]"] = float(np.clip(ratio, -1.0, 1.0).mean())
        out[f"implicit_reward_sqrt[{name}]"] = float(ratio.sum() / np.sqrt(len(ratio)))
        out[f"ref_mean[{name}]"] = float(ref.mean())
        for weight in (-1.0, -0.5, 0.5, 1.0, 2.0):
            out[f"policy_mean{weight:+g}*ir[{name}]"] = float(policy.mean() + weight * ratio.mean())
    return out


def token_kinds(tokens: list[str], num_content: int, truth: set[str]) -> list[str]:
    """The kind of each answer token: "true" / "hallucinated" (colour or shape word of a present / absent object),
    "end" (end-of-turn tokens) or "other"."""
    words = [token.replace("Ġ", "").strip().lower() for token in tokens]
    kinds = ["other"] * len(tokens)
    for i in range(min(num_content, len(tokens)) - 1):
        if words[i] in COLORS and words[i + 1].removesuffix("s") in SHAPES:
            kind = "true" if f"{words[i]} {words[i + 1].removesuffix('s')}" in truth else "hallucinated"
            kinds[i] = kinds[i + 1] = kind
    for i in range(num_content, len(tokens)):
        kinds[i] = "end"
    return kinds


def pairwise_accuracy(scenes: list[list[Candidate]], score: str) -> float:
    """How often the answer with fewer hallucinated objects scores higher, over pairs of one scene's answers."""
    right = total = 0.0
    for candidates in scenes:
        for a, b in itertools.combinations(candidates, 2):
            if a["hallucinated"] == b["hallucinated"]:
                continue
            better, worse = (a, b) if a["hallucinated"] < b["hallucinated"] else (b, a)
            total += 1
            if better["scores"][score] > worse["scores"][score]:
                right += 1
            elif better["scores"][score] == worse["scores"][score]:
                right += 0.5
    return right / total if total else float("nan")


def evaluate_pick(
    scenes: list[list[Candidate]], truths: list[list[str]], pick: Callable[[list[Candidate]], Candidate]
) -> dict[str, float]:
    picked = [pick(candidates) for candidates in scenes]
    result = chair([p["text"] for p in picked], truths, shapes_objects)
    return {
        "chair_response": result.response_rate,
        "chair_mention": result.mention_rate,
        "recall": result.recall,
        "tokens": statistics.mean(p["tokens"] for p in picked),
        "objects": statistics.mean(p["mentioned"] for p in picked),
        "truncated": statistics.mean(p["truncated"] for p in picked),
    }


def off_policy_control(policy, refs: dict, processor, rows) -> dict[str, dict[str, float]]:
    """The same scores on answers not sampled from the policy: per scene the true description, up to 3 with one
    object left out and 4 with one absent object added (templated, in canonical order).

    Returns, per score, the pairwise accuracy (answers without vs with a hallucinated object) and, per reference, the
    mean log(pi / pi_ref) of the hallucinated objects' colour and shape tokens.
    """
    world = ShapesWorld()
    per_scene: list[list[tuple[str, int]]] = []
    for row in rows:
        scene, rng = world.scene(row["scene_seed"]), random.Random(row["scene_seed"])
        names = scene.object_names
        candidates = [(scene.description(), 0)]
        for _ in range(3 if len(names) > 1 else 0):
            left_out = rng.choice(names)
            candidates.append((describe([name for name in names if name != left_out]), 0))
        candidates += [(world.hallucinated_description(scene, rng, extra=1)[0], 1) for _ in range(4)]
        per_scene.append(candidates)
    prompts = [row["prompt"] for row, c in zip(rows, per_scene) for _ in c]
    images = [row["images"] for row, c in zip(rows, per_scene) for _ in c]
    answers = [text for c in per_scene for text, _ in c]
    scenes: list[list[Candidate]] = [[{"hallucinated": count, "scores": {}} for _, count in c] for c in per_scene]
    flat = [(candidate, set(row["objects"])) for row, c in zip(rows, scenes) for candidate in c]
    figures: dict[str, dict[str, float]] = {}
    for name, ref in refs.items():
        tokens = LengthNormalizedRewardScorer(policy, ref, processor).token_log_probs(prompts, images, answers)
        ratios = []
        for (candidate, truth), answer in zip(flat, tokens):
            ratio = (answer.policy - answer.reference).numpy()
            candidate["scores"][f"implicit_reward[{name}]"] = float(ratio.mean())
            candidate["scores"][f"ref_mean[{name}]"] = float(answer.reference.mean())
            candidate["scores"]["policy_mean"] = float(answer.policy.mean())
            tokens_text = processor.tokenizer.convert_ids_to_tokens(answer.token_ids)
            kinds = token_kinds(tokens_text, answer.num_content_tokens, truth)
            ratios += [float(r) for kind, r in zip(kinds, ratio) if kind == "hallucinated"]
        figures[f"hallucinated_token_log_ratio[{name}]"] = {"mean": statistics.mean(ratios)}
    for score in scenes[0][0]["scores"]:
        figures[score] = {"pairwise_accuracy": pairwise_accuracy(scenes, score)}
    return figures


def main() -> dict:
    options = parse_options()
    torch.set_num_threads(options.threads)
    iterations = sorted(int(p.name.split("-")[1]) for p in (options.run / "models").glob("iteration-*"))
    iteration = options.iteration or iterations[-1]
    paths = {"policy": options.run / "models" / f"iteration-{iteration}", "base": options.base}
    if iteration > 1:
        paths[f"iteration-{iteration - 1}"] = options.run / "models" / f"iteration-{iteration - 1}"
    processor = AutoProcessor.from_pretrained(paths["policy"])
    policy = load(paths["policy"])
    refs = {name: load(path) for name, path in paths.items() if name != "policy"}

    rows = list(prompt_dataset(options.scenes, start_seed=options.start_seed, seed=options.sampling_seed))
    sampler = CandidateSampler(
        policy, processor, num_candidates=options.n, temperature=options.temperature,
        max_new_tokens=options.max_new_tokens, top_p=1.0, top_k=0,
    )  # fmt: skip
    answers: list[list[str]] = []
    for start in range(0, len(rows), 16):
        batch = rows[start : start + 16]
        seeds = [row["scene_seed"] + options.sampling_seed for row in batch]
        answers += sampler.sample_batch([r["prompt"] for r in batch], [r["images"] for r in batch], seeds)

    suffix = len(processor.tokenizer(processor.tokenizer.eos_token + "\n", add_special_tokens=False)["input_ids"])
    per_ref = {
        name: token_log_probs(LengthNormalizedRewardScorer(policy, ref, processor), rows, answers)
        for name, ref in refs.items()
    }
    flat_prompts = [row["prompt"] for row, c in zip(rows, answers) for _ in c]
    flat_images = [row["images"] for row, c in zip(rows, answers) for _ in c]
    flat_answers = [answer for c in answers for answer in c]
    scorers = {"mode=policy_log_prob": LengthNormalizedRewardScorer(policy, None, processor, mode="policy_log_prob")}
    for name, ref in refs.items():
        for mode in ("implicit_reward", "reference_log_prob"):
            scorers[f"mode={mode}[{name}]"] = LengthNormalizedRewardScorer(policy, ref, processor, mode=mode)
    by_scorer = {name: iter(s.score(flat_prompts, flat_images, flat_answers)) for name, s in scorers.items()}
    scenes: list[list[Candidate]] = []
    token_ratios: dict[str, dict[str, list[float]]] = {name: {} for name in [*refs, "policy_log_prob"]}
    for i, (row, candidates) in enumerate(zip(rows, answers)):
        truth = set(row["objects"])
        scene = []
        for j, text in enumerate(candidates):
            first = per_ref["base"][i][j]
            tokens = {
                "policy": first.policy.numpy(),
                "refs": {n: v[i][j].reference.numpy() for n, v in per_ref.items()},
            }
            kinds = token_kinds(
                processor.tokenizer.convert_ids_to_tokens(first.token_ids), first.num_content_tokens, truth
            )
            for name, ref in tokens["refs"].items():
                for kind, ratio in zip(kinds, tokens["policy"] - ref):
                    token_ratios[name].setdefault(kind, []).append(float(ratio))
            for kind, logp in zip(kinds, tokens["policy"]):
                token_ratios["policy_log_prob"].setdefault(kind, []).append(float(logp))
            mentioned = set(shapes_objects(text))
            scene.append(
                {
                    "text": text,
                    "hallucinated": len(mentioned - truth),
                    "found": len(mentioned & truth),
                    "mentioned": len(mentioned),
                    "tokens": len(first.policy) - suffix,
                    "truncated": len(first.policy) - suffix >= options.max_new_tokens,
                    "scores": {**scores_of(tokens, suffix), **{k: next(v) for k, v in by_scorer.items()}},
                }
            )
        scenes.append(scene)
    truths = [row["objects"] for row in rows]

    rng = random.Random(options.pick_seed)
    random_picks = {id(candidates): rng.randrange(len(candidates)) for candidates in scenes}
    picks: dict[str, Callable[[list[Candidate]], Candidate]] = {
        "random": lambda c: c[random_picks[id(c)]],
        "oracle": lambda c: min(c, key=lambda a: (a["hallucinated"], -a["found"])),
    }
    names = list(scenes[0][0]["scores"])
    for name in names:
        picks[name] = lambda c, name=name: max(c, key=lambda a: a["scores"][name])
    table = {}
    for name, pick in picks.items():
        table[name] = evaluate_pick(scenes, truths, pick)
        table[name]["pairwise_accuracy"] = pairwise_accuracy(scenes, name) if name in names else float("nan")
    all_answers = [a for c in scenes for a in c]
    figures = {
        "setup": {
            "run": str(options.run),
            "iteration": iteration,
            "references": {k: str(v) for k, v in paths.items()},
            "scenes": options.scenes,
            "start_seed": options.start_seed,
            "sampling_seed": options.sampling_seed,
            "pick_seed": options.pick_seed,
            "n": options.n,
            "temperature": options.temperature,
            "max_new_tokens": options.max_new_tokens,
            "end_of_turn_tokens": suffix,
        },  # fmt: skip
        "candidates": {
            "hallucinated_share": statistics.mean(a["hallucinated"] > 0 for a in all_answers),
            "truncated_share": statistics.mean(a["truncated"] for a in all_answers),
            "mean_tokens": statistics.mean(a["tokens"] for a in all_answers),
        },
        "picks": table,
        "tokens_by_kind": {
            name: {
                kind: {
                    "count": len(v),
                    "mean": statistics.mean(v),
                    "p10": float(np.quantile(v, 0.1)),
                    "p90": float(np.quantile(v, 0.9)),
                    "max": max(v),
                }
                for kind, v in sorted(kinds.items())
            }
            for name, kinds in token_ratios.items()
        },  # fmt: skip
    }
    figures["off_policy_control"] = off_policy_control(policy, refs, processor, rows)
    print(markdown(figures))
    if options.json:
        figures["scenes"] = [
            {"truth": t, "candidates": [{k: v for k, v in a.items()} for a in c]} for t, c in zip(truths, scenes)
        ]
        options.json.write_text(json.dumps(figures, indent=1))
    return figures


def markdown(figures: dict) -> str:
    """The picks as a Markdown table."""
    lines = [
        "| pick | CHAIR resp. % | CHAIR mention % | recall % | tokens | objects | truncated % | pairwise acc. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in figures["picks"].items():
        lines.append(
            f"| {name} | {100 * r['chair_response']:.1f} | {100 * r['chair_mention']:.1f} | {100 * r['recall']:.1f} "
            f"| {r['tokens']:.1f} | {r['objects']:.2f} | {100 * r['truncated']:.1f} | {r['pairwise_accuracy']:.3f} |"
        )
    lines += ["", "Per-token log(pi / pi_ref) (and log pi) of all candidates, by kind of token:", ""]
    lines += ["| of | kind | tokens | mean | p10 | p90 | max |", "|---|---|---|---|---|---|---|"]
    for name, kinds in figures["tokens_by_kind"].items():
        for kind, r in kinds.items():
            figures_ = " | ".join(f"{r[key]:.3f}" for key in ("mean", "p10", "p90", "max"))
            lines.append(f"| {name} | {kind} | {r['count']} | {figures_} |")
    lines += ["", "Off-policy control (templated answers: true, one object left out, one absent object added):", ""]
    for name, r in figures["off_policy_control"].items():
        lines.append(f"- {name}: " + ", ".join(f"{key} {value:.3f}" for key, value in r.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
