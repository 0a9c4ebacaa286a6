"""How well do the oracle rankers order ShapesWorld answers? Parse failures, position bias and agreement with the
exact ground truth.

For `--scenes` held-out scenes (seeds from `--start-seed`), the built-in policy samples `--n` answers at temperature
1.0; the ground truth of an answer is its number of hallucinated objects (distinct objects it mentions that the scene
lacks; fewer is better). Each ranker orders every scene's answers:

- `divide_and_conquer`: claim-label scores from the built-in labeler (`DivideAndConquerRanker`);
- `listwise[<model>, k]`: `ListwiseRanker` with k presentation orders (k = 1 and 3), no fallback, on the built-in
  ranker (a VLM fine-tuned on ShapesWorld ranking queries, `builtin:shapesworld-llava-ranker`, also with the
  divide-and-conquer ranker as its fallback), on the built-in policy and labeler (VLMs that never learnt to rank),
  tiny random stand-ins of VLM families and tiny random text-only language models.

Figures per ranker: the share of queries whose reply named no candidate label (`unparseable_rate`) or only some
(`partial_rate`); `first_position_win_rate` (usable replies whose top group holds the candidate shown first) beside
1/n; and the agreement with the ground truth: Kendall tau-b per scene, averaged over the scenes where both the truth
and the ranker order something (`kendall_tau_b`, `tau_scenes`), and the pairwise accuracy over answer pairs of one
scene with different truths (agree 1, ranker tie 1/2, reversed 0), where a ranker with no usable reply (all tied)
scores 1/2.

Position bias of the built-in ranker, measured directly (`position_bias`): each scene's answers are shown in
`--shuffles` random orders (the answer list itself is permuted, so k = 1 sees a different first answer each time)
and the top group is mapped back to answer ids; `top_pick_change_rate` is the share of pairs of shuffles of one
scene whose top groups differ (0 for a ranker that ignores positions), for k = 1 and k = 3.

    python benchmarks/listwise_ranker.py --scenes 40 --json listwise_ranker.json
"""

from __future__ import annotations

import itertools
import math
import platform
import random
import statistics
import time
from collections.abc import Sequence

from common import benchmark_parser, cpu_name, parse_options, report

from rlaifv_testbed import ShapesWorld
from rlaifv_testbed.builtin import BUILTIN_LABELER, BUILTIN_POLICY, BUILTIN_RANKER
from rlaifv_testbed.data import DESCRIPTION_PROMPTS, user_turn
from rlaifv_testbed.models import make_tiny_causal_lm, make_tiny_vlm
from rlaifv_testbed.ranking_data import hallucinated_objects
from rlaifv_trl.feedback.sampling import CandidateSampler
from rlaifv_trl.loading import load_vlm
from rlaifv_trl.ranking import DivideAndConquerRanker, ListwiseRanker, Ranking


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two score lists (ties allowed); None when either is constant."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx * dy > 0:
            concordant += 1
        else:
            discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else None


def agreement(rankings: Sequence[Ranking], truths: Sequence[list[int]]) -> dict[str, float | int | None]:
    """Mean Kendall tau-b (scenes where it is defined) and pairwise accuracy of rankings against the truth."""
    taus, pairs = [], []
    for ranking, truth in zip(rankings, truths):
        goodness = [-t for t in truth]
        order = [-r for r in ranking.ranks]  # rank 0 is best
        tau = kendall_tau_b(order, goodness)
        if tau is not None:
            taus.append(tau)
        for i, j in itertools.combinations(range(len(truth)), 2):
            if goodness[i] != goodness[j]:
                better, worse = (i, j) if goodness[i] > goodness[j] else (j, i)
                pairs.append(1.0 if order[better] > order[worse] else 0.5 if order[better] == order[worse] else 0.0)
    return {
        "kendall_tau_b": round(statistics.mean(taus), 4) if taus else None,
        "tau_scenes": len(taus),
        "pairwise_accuracy": round(statistics.mean(pairs), 4) if pairs else None,
        "pairs": len(pairs),
    }


def listwise_figures(ranker: ListwiseRanker, rankings: Sequence[Ranking], truths: Sequence[list[int]]) -> dict:
    """Reply rates, first-position wins and agreement of a listwise ranker that has ranked every scene."""
    counts = ranker.report
    rate = counts.first_position_win_rate
    return {
        "queries": counts.num_queries,
        "unparseable_rate": round(counts.num_unparseable / counts.num_queries, 4),
        "partial_rate": round(counts.num_partial / counts.num_queries, 4),
        "first_position_win_rate": round(rate, 4) if rate is not None else None,
        "fallbacks": counts.num_fallbacks,
        **agreement(rankings, truths),
    }


def top_pick_changes(
    ranker: ListwiseRanker, prompts: Sequence, images: Sequence, candidates: Sequence[list[str]], shuffles: int
) -> dict[str, float | int]:
    """How often the top group changes between shuffled presentations of the same answers (pairs of shuffles)."""
    rng = random.Random(1)
    tops: list[list[frozenset[int]]] = [[] for _ in candidates]
    for _ in range(shuffles):
        permutations = [rng.sample(range(len(answers)), len(answers)) for answers in candidates]
        shown = [[answers[i] for i in p] for answers, p in zip(candidates, permutations)]
        for index, (ranking, p) in enumerate(zip(ranker.rank_batch(prompts, images, shown), permutations)):
            tops[index].append(frozenset(p[i] for i in ranking.groups[0]))
    changes = [a != b for scene in tops for a, b in itertools.combinations(scene, 2)]
    single = [len(top) == 1 for scene in tops for top in scene]
    return {
        "shuffles": shuffles,
        "top_pick_change_rate": round(statistics.mean(changes), 4),
        "single_top_rate": round(statistics.mean(single), 4),
    }


def main() -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--n", type=int, default=4, help="Answers per scene.")
    parser.add_argument("--start-seed", type=int, default=900_000)
    parser.add_argument("--max-new-tokens", type=int, default=24, help="Longest listwise reply.")
    parser.add_argument("--shuffles", type=int, default=4, help="Presentation orders per scene (position bias).")
    parser.add_argument("--only-ranker", action="store_true", help="Skip the models that never learnt to rank.")
    parser.add_argument(
        "--stand-ins", nargs="*", default=["llava", "qwen2_vl", "idefics3"], help="Tiny random VLM families."
    )
    parser.add_argument("--text-models", nargs="*", default=["llama", "qwen2"], help="Tiny random text-only LMs.")
    options = parse_options(parser)
    world, rng = ShapesWorld(), random.Random(0)
    scenes = [world.scene(options.start_seed + i) for i in range(options.scenes)]
    prompts = [user_turn(rng.choice(DESCRIPTION_PROMPTS)) for _ in scenes]
    images = [[scene.render()] for scene in scenes]

    start = time.perf_counter()
    policy = load_vlm(BUILTIN_POLICY)
    sampler = CandidateSampler(*policy, num_candidates=options.n, temperature=1.0, max_new_tokens=48)
    candidates = [sampler.sample(p, i, seed) for seed, (p, i) in enumerate(zip(prompts, images))]
    truths = [[hallucinated_objects(a, s.object_names) for a in answers] for s, answers in zip(scenes, candidates)]
    sampling_seconds = time.perf_counter() - start

    figures: dict = {
        "cpu": f"{cpu_name()}, {options.threads} torch thread(s)",
        "python": platform.python_version(),
        "scenes": options.scenes,
        "answers_per_scene": options.n,
        "chance_first_position_win_rate": round(1 / options.n, 4),
        "sampling_seconds": round(sampling_seconds, 1),
        "scenes_with_distinct_truths": sum(len(set(t)) > 1 for t in truths),
        "mean_hallucinated_objects": round(statistics.mean(x for t in truths for x in t), 3),
        "rankers": {},
    }

    start = time.perf_counter()
    dnc = DivideAndConquerRanker(*load_vlm(BUILTIN_LABELER, role="labeler"))
    rankings = dnc.rank_batch(prompts, images, candidates)
    figures["rankers"]["divide_and_conquer"] = {
        **agreement(rankings, truths),
        "seconds": round(time.perf_counter() - start, 1),
    }

    ranker_model = load_vlm(BUILTIN_RANKER)
    models = {"builtin-ranker (VLM)": ranker_model}
    if not options.only_ranker:
        models["builtin-policy (VLM)"] = policy
        models["builtin-labeler (VLM)"] = (dnc.labeler.model, dnc.labeler.processor)
        models.update({f"tiny-{arch} (VLM)": make_tiny_vlm(arch, "tiny", seed=0) for arch in options.stand_ins})
        models.update({f"tiny-{family} (text)": make_tiny_causal_lm(family, seed=0) for family in options.text_models})
    runs = [(name, model, k, None) for name, model in models.items() for k in (1, 3)]
    runs += [("builtin-ranker (VLM)", ranker_model, k, dnc) for k in (1, 3)]
    for name, (model, processor), k, fallback in runs:
        start = time.perf_counter()
        ranker = ListwiseRanker(
            model, processor, num_permutations=k, fallback=fallback, max_new_tokens=options.max_new_tokens
        )
        rankings = ranker.rank_batch(prompts, images, candidates)
        label = f"listwise[{name}, k={k}{', fallback=divide_and_conquer' if fallback else ''}]"
        figures["rankers"][label] = {
            **listwise_figures(ranker, rankings, truths),
            "seconds": round(time.perf_counter() - start, 1),
        }

    figures["position_bias"] = {}
    for k in (1, 3):
        ranker = ListwiseRanker(*ranker_model, num_permutations=k, max_new_tokens=options.max_new_tokens)
        figures["position_bias"][f"builtin-ranker, k={k}"] = top_pick_changes(
            ranker, prompts, images, candidates, options.shuffles
        )
    return report(figures, options.json)


if __name__ == "__main__":
    main()
