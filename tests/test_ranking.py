"""Oracle rankers: reply parsing, aggregation over presentation orders, the divide-and-conquer and listwise rankers
on the built-in ShapesWorld models, and the reward adapter."""

import math
import random

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import GRPOConfig, GRPOTrainer

from rlaifv_testbed import MotionWorld, ShapesWorld, prompt_dataset
from rlaifv_testbed.builtin import BUILTIN_LABELER, BUILTIN_POLICY
from rlaifv_testbed.data import user_turn
from rlaifv_testbed.models import make_tiny_causal_lm
from rlaifv_testbed.motion_data import video_turn
from rlaifv_trl.feedback.claims import with_instruction
from rlaifv_trl.feedback.config import DEFAULT_YES_NO_INSTRUCTION
from rlaifv_trl.feedback.labeler import LabelGroup, YesNoLabeler
from rlaifv_trl.feedback.rules import RuleBasedClaimSplitter, RuleBasedQuestionWriter
from rlaifv_trl.loading import load_vlm, resolve_model_name
from rlaifv_trl.ranking import (
    DivideAndConquerRanker,
    ListwiseRanker,
    RankerReward,
    Ranking,
    aggregate,
    dcg_gain,
    parse_ranking,
    presentation_orders,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORLD = ShapesWorld()


@pytest.mark.parametrize(
    "reply, groups, status",
    [
        ("3 > 1 > 2", [[2], [0], [1]], "ok"),
        ("[3, 1, 2]", [[2], [0], [1]], "ok"),
        ("Answer 3 is best, then 1, then 2.", [[2], [0], [1]], "ok"),
        ("I compared the 5 answers: 3 > 1 > 2. Done.", [[2], [0], [1]], "ok"),  # extra text and its numbers
        ("1. Answer 3\n2. Answer 1\n3. Answer 2", [[2], [0], [1]], "ok"),  # line numbering is not a label
        ("3 > 1 = 2", [[2], [0, 1]], "ok"),  # "=" ties
        ("3, 3, 1, 3, 2", [[2], [0], [1]], "ok"),  # duplicates: the first occurrence counts
        ("0 > 7 > 2 > 9 > 1 > 3", [[1], [0], [2]], "ok"),  # out-of-range ids ignored
        ("2", [[1], [0, 2]], "partial"),  # missing ids: one tie group at the end
        ("Ranking: [2, 1] and the last", [[1], [0], [2]], "partial"),
        ("I cannot tell.", [[0, 1, 2]], "unparseable"),
        ("", [[0, 1, 2]], "unparseable"),
        (None, [[0, 1, 2]], "unparseable"),
        ("[9, 8] 4", [[0, 1, 2]], "unparseable"),
    ],
)
def test_parse_ranking(reply, groups, status):
    parsed = parse_ranking(reply, 3)
    assert parsed.groups == groups and parsed.status == status


def test_presentation_orders_start_with_the_given_order_and_are_seeded_and_distinct():
    orders = presentation_orders(4, 3, seed=7)
    assert orders[0] == [0, 1, 2, 3] and len({tuple(o) for o in orders}) == 3
    assert orders == presentation_orders(4, 3, seed=7) and orders != presentation_orders(4, 3, seed=8)
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    assert len(presentation_orders(2, 5, seed=0)) == 5  # more orders than exist: repeats allowed


def test_aggregate_borda_and_mean_rank_with_ties():
    rankings = [[[0], [1, 2]], [[1], [0], [2]]]
    assert aggregate(rankings, 3, "borda") == [1.5, 1.25, 0.25]  # (2 + 1) / 2, (0.5 + 2) / 2, (0.5 + 0) / 2
    assert aggregate(rankings, 3, "mean_rank") == [-0.5, -0.5, -1.5]
    ranking = Ranking.from_keys(aggregate(rankings, 3, "mean_rank"))
    assert ranking.groups == [[0, 1], [2]] and ranking.ranks == [0, 0, 1]


def test_ranking_checks_its_groups():
    assert Ranking.from_groups([[2], [0, 3], [1]]).ranks == [1, 2, 0, 1]
    with pytest.raises(ValueError, match="candidate ids once"):
        Ranking.from_groups([[0], [2]])
    with pytest.raises(ValueError, match="status"):
        Ranking([[0]], [0], [None], status="great")


def scene_candidates(seed: int) -> tuple[list, list[str]]:
    """A scene's image and candidates: two-object hallucination, truth, empty, one-object hallucination, first object."""
    scene = WORLD.scene(seed)
    two, _ = WORLD.hallucinated_description(scene, random.Random(seed), extra=2)
    one, _ = WORLD.hallucinated_description(scene, random.Random(seed), extra=1)
    first = f"There is a {scene.object_names[0]}."
    return [scene.render()], [two, scene.description(), "", one, first]


@pytest.fixture(scope="module")
def labeler():
    return load_vlm(BUILTIN_LABELER, role="labeler")


@pytest.fixture(scope="module")
def dnc(labeler):
    return DivideAndConquerRanker(*labeler)


def test_divide_and_conquer_scores_are_the_generators_claim_scores(dnc, labeler):
    images, candidates = scene_candidates(4)
    ranking = dnc.rank(user_turn("Describe the image."), images, candidates)
    claims = RuleBasedClaimSplitter().split(["Describe the image."] * 5, candidates, 0)
    questions = RuleBasedQuestionWriter().write([c for cs in claims for c in cs], 0)
    labels = iter(
        dnc.labeler.label_group(
            LabelGroup(images, [with_instruction(q, DEFAULT_YES_NO_INSTRUCTION) for q in questions])
        )
    )
    verdicts = [[next(labels).accepted for _ in cs] for cs in claims]
    expected = [-float(sum(not ok for ok in v)) if v else None for v in verdicts]
    assert ranking.scores == expected and ranking.scores[2] is None
    weighted = DivideAndConquerRanker(*labeler, confirmed_claim_weight=0.5).rank(
        "Describe the image.", images, candidates
    )
    assert weighted.scores == [0.5 * sum(v) - sum(not ok for ok in v) if v else None for v in verdicts]
    assert any(sum(v) for v in verdicts)  # the weight changes some score
    with pytest.raises(ValueError, match="confirmed_claim_weight"):
        DivideAndConquerRanker(*labeler, confirmed_claim_weight=-1.0)
    assert ranking.groups[-1] == [2]  # the empty answer: last, in a group of its own
    assert ranking.scores[0] < ranking.scores[3] <= ranking.scores[1]  # more hallucinated objects, lower score
    assert ranking.status == "ok" and ranking.ranks == Ranking.from_keys(ranking.scores).ranks


def test_divide_and_conquer_orders_truth_above_hallucinations_and_breaks_ties(dnc, labeler):
    scenes = [scene_candidates(seed) for seed in range(6)]
    rankings = dnc.rank_batch(["Describe the image."] * 6, [s[0] for s in scenes], [s[1] for s in scenes])
    assert sum(r.ranks[1] < r.ranks[0] for r in rankings) >= 5  # truth above the two-object hallucination
    assert rankings[3].ranks == dnc.rank("Describe the image.", *scenes[3]).ranks
    refined = DivideAndConquerRanker(*labeler, tie_break="fewer_rejected_then_more_claims")
    margin = DivideAndConquerRanker(*labeler, tie_break="labeler_margin")
    tied_truths = 0
    for (images, candidates), kept in zip(scenes, rankings):
        for other in (refined.rank("Describe the image.", images, candidates), margin.rank("", images, candidates)):
            assert other.scores == kept.scores
            assert all(
                kept.ranks[a] <= kept.ranks[b] for a in range(5) for b in range(5) if other.ranks[a] < other.ranks[b]
            )
        if kept.ranks[1] == kept.ranks[4] and candidates[1] != candidates[4]:
            tied_truths += 1
            more_claims = refined.rank("Describe the image.", images, candidates)
            assert more_claims.ranks[1] < more_claims.ranks[4]  # same score, more claims first
    assert tied_truths >= 1
    guarded = DivideAndConquerRanker(*labeler, tie_break="fewer_rejected_then_more_claims", first_is_reference=True)
    moved = 0
    for images, candidates in scenes:
        # The reference: the answer with the most claims (the truth or the hallucination), first.
        order = sorted(range(len(candidates)), key=lambda i: -len(candidates[i]))
        reordered = [candidates[i] for i in order]
        ranking = guarded.rank("Describe the image.", images, reordered)
        labels = {c: r for c, r in zip(reordered, DivideAndConquerRanker(*labeler, confirmed_claim_weight=1.0).rank(
            "", images, reordered).scores)}  # fmt: skip
        confirmed = [None if s is None else labels[c] - s for c, s in zip(reordered, ranking.scores)]
        top = ranking.groups[0][0]
        assert confirmed[top] >= confirmed[0]  # never fewer confirmed claims than the reference
        eligible = [i for i, c in enumerate(confirmed) if c is not None and c >= confirmed[0]]
        assert ranking.scores[top] == max(ranking.scores[i] for i in eligible)
        moved += ranking.groups[0][0] != refined.rank("", images, reordered).groups[0][0]
    assert moved >= 1  # the guard changes some pick
    with pytest.raises(ValueError, match="tie_break"):
        DivideAndConquerRanker(*labeler, tie_break="coin")
    with pytest.raises(ValueError, match="processor"):
        DivideAndConquerRanker(labeler[0])


def test_listwise_replies_are_mapped_back_through_the_presentation_orders(labeler):
    ranker = ListwiseRanker(*labeler, num_permutations=3, seed=1)
    candidates = [["a", "b", "c"], ["d", "e"]]
    queries = ranker.queries(["q1", "q2"], candidates)
    assert [q.prompt for q in queries] == [0, 0, 0, 1, 1, 1]
    assert "Answer 1: a" in queries[0].text and "Answer 3: c" in queries[0].text
    assert queries[0].text.startswith("Question about the image: q1") and "video" not in queries[0].text
    order = queries[1].order
    assert f"Answer 1: {candidates[0][order[0]]}" in queries[1].text
    # Prompt 0: the identity order says 3 > 1 > 2; the other two orders name the same candidates in the same way.
    replies = ["3 > 1 > 2"] + [" > ".join(str(q.order.index(c) + 1) for c in (2, 0, 1)) for q in queries[1:3]]
    replies += ["nonsense", "no idea", "none"]  # prompt 1: nothing usable
    rankings = ranker.combine(queries, replies, ["q1", "q2"], [[], []], candidates)
    assert rankings[0].groups == [[2], [0], [1]] and rankings[0].status == "ok"
    assert rankings[0].scores == [1.0, 0.0, 2.0]  # Borda points, averaged
    assert rankings[1].groups == [[0, 1]] and rankings[1].status == "unparseable"
    report = ranker.report
    assert (report.num_queries, report.num_unparseable, report.num_partial, report.num_fallbacks) == (6, 3, 0, 1)
    # The candidate shown first (label 1) was put first only by the replies whose order starts with candidate 2.
    assert report.num_first_position_wins == sum(q.order[0] == 2 for q in queries[:3])
    assert report.first_position_win_rate == report.num_first_position_wins / 3


def test_listwise_on_a_vlm_that_cannot_rank_falls_back_without_crashing(dnc):
    images, candidates = scene_candidates(4)
    policy = load_vlm(BUILTIN_POLICY)
    fallback = ListwiseRanker(*policy, num_permutations=2, fallback=dnc, max_new_tokens=12)
    tied = ListwiseRanker(*policy, num_permutations=2, max_new_tokens=12)
    with_fallback = fallback.rank("Describe the image.", images, candidates)
    without = tied.rank("Describe the image.", images, candidates)
    assert fallback.report.num_queries == tied.report.num_queries == 2
    # The built-in policy describes shapes; it does not write rankings.
    assert fallback.report.num_unparseable == 2 and fallback.report.num_fallbacks == 1
    assert with_fallback.status == "fallback" and with_fallback.groups == dnc.rank("", images, candidates).groups
    assert without.status == "unparseable" and without.groups == [[0, 1, 2, 3, 4]]


def test_listwise_on_a_text_only_language_model():
    model, tokenizer = make_tiny_causal_lm("llama", seed=3)
    ranker = ListwiseRanker(model, tokenizer, num_permutations=3, max_new_tokens=8, batch_size=4)
    rankings = ranker.rank_batch(["Describe the image."] * 2, [[], []], [["a red circle", "a blue square"]] * 2)
    report = ranker.report  # a random model: its replies name no label in range (e.g. " whit0agetable")
    assert (report.num_queries, report.num_unparseable, report.num_fallbacks) == (6, 6, 2)
    assert report.first_position_win_rate is None
    assert [(r.groups, r.status) for r in rankings] == [([[0, 1]], "unparseable")] * 2


def test_ranker_reward_groups_completions_by_prompt_and_prompt_id(dnc):
    first, second = scene_candidates(4), scene_candidates(5)
    prompt = user_turn("Describe the image.")
    completions = [[{"role": "assistant", "content": text}] for text in (first[1][1], first[1][0], second[1][1])]
    completions.append([{"role": "assistant", "content": second[1][0]}])
    columns = {"images": [first[0], first[0], second[0], second[0]], "prompt_id": ["a", "a", "b", "b"]}
    gains = RankerReward(dnc)([prompt] * 4, completions, **columns)
    assert RankerReward(dnc).__name__ == "gain_rank_reward"
    expected = [
        dnc.rank(prompt, first[0], [first[1][1], first[1][0]]),
        dnc.rank(prompt, second[0], [second[1][1], second[1][0]]),
    ]
    assert gains == [dcg_gain(r) for ranking in expected for r in ranking.ranks]
    assert gains[0] == 1.0 and gains[1] == pytest.approx(1 / (2 * math.log2(3)))
    neg = RankerReward(dnc, "neg_rank")([prompt] * 4, completions, **columns)
    assert neg == [-float(r) for ranking in expected for r in ranking.ranks]
    scores = RankerReward(dnc, "score")([prompt] * 4, completions, **columns)
    assert scores == [s for ranking in expected for s in ranking.scores]
    by_images = RankerReward(dnc, "neg_rank")([prompt] * 4, completions, images=columns["images"])  # no prompt_id
    assert by_images == neg  # the same prompt text with other images is another prompt
    copies = [[img.copy() for img in first[0]] for _ in range(4)]  # equal pixels, distinct objects (as TRL passes)
    merged = RankerReward(dnc, "neg_rank")([prompt] * 4, completions, images=copies)
    one_group = dnc.rank(prompt, first[0], [c[0]["content"] for c in completions])
    assert merged == [-float(r) for r in one_group.ranks]
    unscored = RankerReward(dnc, "score")(["Describe."] * 2, ["", first[1][1]], images=[first[0]] * 2)
    assert unscored[0] == unscored[1] - 1.0
    with pytest.raises(ValueError, match="reward"):
        RankerReward(dnc, "dcg")


class RecordingReward(RankerReward):
    """The reward adapter, keeping what TRL passed it and what it returned."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def __call__(self, prompts, completions, **columns):
        rewards = super().__call__(prompts, completions, **columns)
        self.calls.append({"prompts": prompts, "columns": columns, "rewards": rewards})
        return rewards


def test_grpo_trainer_trains_from_the_oracle_ranks(dnc, tmp_path):
    path = resolve_model_name(BUILTIN_POLICY)  # a policy whose answers have claims: the ranks differ
    reward = RecordingReward(dnc, "gain")
    args = GRPOConfig(
        str(tmp_path), per_device_train_batch_size=8, num_generations=4, max_completion_length=16, max_steps=2,
        learning_rate=1e-3, use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True,
    )  # fmt: skip
    model = AutoModelForImageTextToText.from_pretrained(path)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=prompt_dataset(4),
        processing_class=AutoProcessor.from_pretrained(path),
    )
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    assert len(reward.calls) == 2
    for call in reward.calls:
        assert "images" in call["columns"] and "prompt_id" in call["columns"]
        ids = call["columns"]["prompt_id"]
        assert len(set(ids)) == 2 and len(set(ids[:4])) == len(set(ids[4:])) == 1  # two prompts, 4 generations each
        for group in (call["rewards"][:4], call["rewards"][4:]):
            assert max(group) == 1.0 and all(r in [dcg_gain(k) for k in range(4)] for r in group)  # a rank is 0
    assert any(len(set(call["rewards"][:4])) > 1 or len(set(call["rewards"][4:])) > 1 for call in reward.calls)
    logged = [log for log in trainer.state.log_history if "rewards/gain_rank_reward/mean" in log]
    assert len(logged) == 2
    assert logged[0]["rewards/gain_rank_reward/mean"] == pytest.approx(sum(reward.calls[0]["rewards"]) / 8, abs=1e-5)


# -- video prompts -------------------------------------------------------------------------------------------------

MOTION = MotionWorld()


def motion_candidates(seed: int) -> tuple[list, list[str]]:
    """A clip's frames and candidates: the truth, a wrong direction, an empty answer, the first object only."""
    clip = MOTION.clip(seed)
    wrong = next(way for way in ("left", "right", "up", "down") if way != clip.direction)
    truth = clip.description()
    return clip.frames(), [
        truth,
        truth.replace(f"moves {clip.direction}", f"moves {wrong}"),
        "",
        clip.description()[:22],
    ]


@pytest.fixture(scope="module")
def qwen_labeler(tiny_vlm_dir):
    path = tiny_vlm_dir("qwen2_vl", seed=0)
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


class GroupRecorder:
    """Keeps the label groups a real labeler was given."""

    def __init__(self, labeler):
        self.groups, self._label_group = [], labeler.label_group
        labeler.label_group = self

    def __call__(self, group):
        self.groups.append(group)
        return self._label_group(group)


def test_divide_and_conquer_labels_claims_with_the_video(qwen_labeler):
    ranker = DivideAndConquerRanker(*qwen_labeler, tie_break="labeler_margin")
    recorder = GroupRecorder(ranker.labeler)
    frames, candidates = motion_candidates(0)
    prompt = video_turn("Describe the video.")
    ranking = ranker.rank(prompt, [], candidates, videos=[frames])
    group = recorder.groups[-1]
    assert group.images == [] and group.videos == [frames]
    labels = iter(YesNoLabeler(*qwen_labeler).label_group(LabelGroup([], group.questions, [frames])))
    claims = RuleBasedClaimSplitter().split(["Describe the video."] * 4, candidates, 0)
    expected = [-float(sum(not next(labels).accepted for _ in cs)) if cs else None for cs in claims]
    assert ranking.scores == expected and ranking.ranks[2] == max(ranking.ranks)  # the empty answer last
    # the video is what the labeler saw: as separate images the frames give other probabilities
    as_images = YesNoLabeler(*qwen_labeler).label_group(LabelGroup([], group.questions[:1]))
    with_video = YesNoLabeler(*qwen_labeler).label_group(LabelGroup([], group.questions[:1], [frames]))
    assert as_images[0].p_yes != pytest.approx(with_video[0].p_yes, abs=1e-7)
    other_frames, other = motion_candidates(1)
    batch = ranker.rank_batch([prompt] * 2, [[], []], [candidates, other], videos=[[frames], [other_frames]])
    assert batch[0] == ranking and recorder.groups[-1].videos == [other_frames]


def test_listwise_query_carries_the_video_and_falls_back_with_it(qwen_labeler):
    model, processor = qwen_labeler
    fallback = DivideAndConquerRanker(model, processor)
    ranker = ListwiseRanker(model, processor, num_permutations=2, fallback=fallback, max_new_tokens=6)
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    frames, candidates = motion_candidates(2)
    try:
        ranking = ranker.rank(video_turn("Describe the video."), [], candidates, videos=[frames])
    finally:
        hook.remove()
    grid = processor.video_processor(videos=[frames], return_tensors="pt")["video_grid_thw"]
    video_token = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    first = seen[0]  # generate's first forward: both presentation orders, each with the clip's video tokens
    tokens = int(grid.prod()) // processor.video_processor.merge_size**2
    assert (first["input_ids"] == video_token).sum(dim=1).tolist() == [tokens, tokens]
    assert (first["mm_token_type_ids"] == 2).sum().item() == 2 * tokens
    query = processor.tokenizer.decode(first["input_ids"][0])
    assert "Question about the video:" in query and "describes the video correctly" in query
    assert "image" not in query
    assert ranker.report.num_queries == 2
    assert ranking.status == "fallback"  # the tiny model writes no ranking: the fallback ranks with the video too
    assert ranking.groups == fallback.rank("Describe the video.", [], candidates, videos=[frames]).groups


def test_ranker_reward_on_video_rows_groups_by_clip_and_passes_the_videos(qwen_labeler):
    ranker = DivideAndConquerRanker(*qwen_labeler)
    (first, one), (second, two) = motion_candidates(0), motion_candidates(1)
    prompt = video_turn("Describe the video.")
    completions = [[{"role": "assistant", "content": text}] for text in (one[0], one[1], two[0], two[3])]
    copies = [[[frame.copy() for frame in clip]] for clip in (first, first, second, second)]  # as TRL passes them
    rewards = RankerReward(ranker, "neg_rank")([prompt] * 4, completions, videos=copies, images=[[]] * 4)
    expected = [
        ranker.rank(prompt, [], [one[0], one[1]], videos=[first]),
        ranker.rank(prompt, [], [two[0], two[3]], videos=[second]),
    ]
    assert rewards == [-float(r) for ranking in expected for r in ranking.ranks]
    one_clip = RankerReward(ranker, "score")([prompt] * 4, completions, videos=[[first]] * 4)
    assert one_clip == ranker.rank(prompt, [], [c[0]["content"] for c in completions], videos=[first]).scores
