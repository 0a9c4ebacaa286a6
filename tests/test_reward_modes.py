"""The score modes of LengthNormalizedRewardScorer on a tiny LLaVA, against a plain forward pass computed here."""

import random

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import ShapesWorld
from rlaifv_testbed.data import assistant_turn, user_turn
from rlaifv_trl import LengthNormalizedRewardScorer
from rlaifv_trl.scoring import SCORE_MODES


pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = user_turn("Describe the image.")


@pytest.fixture(scope="module")
def models(tiny_vlm_dir):
    policy_dir, reference_dir = tiny_vlm_dir("llava", seed=1), tiny_vlm_dir("llava", seed=0)
    return (
        AutoModelForImageTextToText.from_pretrained(policy_dir),
        AutoModelForImageTextToText.from_pretrained(reference_dir),
        AutoProcessor.from_pretrained(policy_dir),
        policy_dir,
    )


@pytest.fixture(scope="module")
def scene():
    world, rng = ShapesWorld(), random.Random(7)
    scene = world.scene(7)
    answers = [scene.description(), world.hallucinated_description(scene, rng, extra=2)[0], "There is a", ""]
    return scene.render(), answers


def by_hand(model, processor, image, answer):
    """Answer token ids, their log-probs from one forward over the chat rendering, and how many are the text."""
    prompt_text = processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    full_text = processor.apply_chat_template(PROMPT + assistant_turn(answer), tokenize=False)
    answer_ids = processor.tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    text_ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"] if answer else []
    inputs = processor(text=[prompt_text], images=[image], return_tensors="pt")
    prompt_length = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([answer_ids])], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with torch.no_grad():
        logps = model(**inputs).logits[0].float().log_softmax(-1)
    token_logps = logps[prompt_length - 1 : -1].gather(-1, torch.tensor(answer_ids)[:, None]).squeeze(-1)
    return answer_ids, token_logps, len(text_ids)


def score(scorer, image, answers):
    return scorer.score([PROMPT] * len(answers), [image] * len(answers), answers)


def test_implicit_reward_mode_is_the_default_and_the_mean_log_ratio(models, scene):
    policy, reference, processor, _ = models
    image, answers = scene
    default = LengthNormalizedRewardScorer(policy, reference, processor, beta=0.25)
    explicit = LengthNormalizedRewardScorer(policy, reference, processor, beta=0.25, mode="implicit_reward")
    summed = LengthNormalizedRewardScorer(policy, reference, processor, beta=0.25, length_normalize=False)
    assert default.mode == "implicit_reward" and default.__name__ == "length_normalized_reward"
    for answer, a, b, c in zip(
        answers, score(default, image, answers), score(explicit, image, answers), score(summed, image, answers)
    ):
        ratio = by_hand(policy, processor, image, answer)[1] - by_hand(reference, processor, image, answer)[1]
        assert a == b == pytest.approx(0.25 * ratio.mean().item(), abs=1e-6)
        assert c == pytest.approx(0.25 * ratio.sum().item(), abs=1e-5)


def test_policy_log_prob_mode_is_the_mean_token_log_prob_and_needs_no_reference(models, scene):
    policy, reference, processor, _ = models
    image, answers = scene
    scorer = LengthNormalizedRewardScorer(policy, None, processor, beta=0.25, mode="policy_log_prob")
    with_reference = LengthNormalizedRewardScorer(policy, reference, processor, beta=3.0, mode="policy_log_prob")
    summed = LengthNormalizedRewardScorer(policy, None, processor, mode="policy_log_prob", length_normalize=False)
    assert scorer.__name__ == "mean_policy_log_prob"
    scores, scores_with_reference, sums = (score(s, image, answers) for s in (scorer, with_reference, summed))
    for answer, mean, mean_with_reference, total in zip(answers, scores, scores_with_reference, sums):
        logps = by_hand(policy, processor, image, answer)[1]
        assert mean == pytest.approx(logps.mean().item(), abs=1e-6)
        assert mean_with_reference == pytest.approx(mean, abs=1e-6)  # neither beta nor the reference enter
        assert total == pytest.approx(logps.sum().item(), abs=1e-5)
    best = scorer.best_of_n(PROMPT, image, answers)
    assert best.index == max(range(len(answers)), key=lambda i: scores[i])


def test_reference_log_prob_mode_is_the_reference_mean_token_log_prob(models, scene):
    policy, reference, processor, _ = models
    image, answers = scene
    scorer = LengthNormalizedRewardScorer(policy, reference, processor, beta=0.25, mode="reference_log_prob")
    summed = LengthNormalizedRewardScorer(
        policy, reference, processor, mode="reference_log_prob", length_normalize=False
    )
    assert scorer.__name__ == "mean_reference_log_prob"
    for answer, mean, total in zip(answers, score(scorer, image, answers), score(summed, image, answers)):
        logps = by_hand(reference, processor, image, answer)[1]
        assert mean == pytest.approx(logps.mean().item(), abs=1e-6)
        assert total == pytest.approx(logps.sum().item(), abs=1e-5)


def test_token_log_probs_give_each_token_and_where_the_end_of_turn_starts(models, scene):
    policy, reference, processor, _ = models
    image, answers = scene
    scorer = LengthNormalizedRewardScorer(policy, reference, processor)
    tokens = scorer.token_log_probs([PROMPT] * len(answers), [[image]] * len(answers), answers)
    end = processor.tokenizer(processor.tokenizer.eos_token + "\n", add_special_tokens=False)["input_ids"]
    for answer, scored in zip(answers, tokens):
        ids, policy_logps, num_text = by_hand(policy, processor, image, answer)
        assert scored.token_ids == ids
        assert scored.num_content_tokens == num_text
        assert scored.token_ids[scored.num_content_tokens :] == end  # "<|im_end|>\n"
        torch.testing.assert_close(scored.policy, policy_logps, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            scored.reference, by_hand(reference, processor, image, answer)[1], atol=1e-5, rtol=0
        )
    plain = scorer.token_log_probs(
        [processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)], [image], ["There is a"]
    )[0]
    assert plain.num_content_tokens == len(processor.tokenizer("There is a")["input_ids"])
    assert plain.token_ids[plain.num_content_tokens :] == [processor.tokenizer.eos_token_id]
    assert (
        LengthNormalizedRewardScorer(policy, None, processor, mode="policy_log_prob")
        .token_log_probs([PROMPT], [image], ["There is a"])[0]
        .reference
        is None
    )


def test_each_mode_is_a_trl_reward_function(models, scene):
    policy, reference, processor, _ = models
    image, answers = scene
    for mode in SCORE_MODES:
        scorer = LengthNormalizedRewardScorer(policy, reference, processor, mode=mode)
        completions = [assistant_turn(answer) for answer in answers]
        rewards = scorer(prompts=[PROMPT] * len(answers), completions=completions, images=[[image]] * len(answers))
        assert rewards == pytest.approx(score(scorer, image, answers), abs=1e-6)


def test_modes_are_checked_and_the_implicit_reward_still_needs_a_reference(models):
    policy, _, processor, policy_dir = models
    with pytest.raises(ValueError, match="Unknown mode"):
        LengthNormalizedRewardScorer(policy, None, processor, mode="log_prob")
    for mode in ("implicit_reward", "reference_log_prob"):
        with pytest.raises(ValueError, match="needs a reference"):
            LengthNormalizedRewardScorer(policy, None, processor, mode=mode)
    loaded = LengthNormalizedRewardScorer.from_pretrained(policy_dir, mode="policy_log_prob")
    assert loaded.ref_model is None and loaded.mode == "policy_log_prob"
