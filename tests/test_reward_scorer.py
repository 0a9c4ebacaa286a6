"""LengthNormalizedRewardScorer on tiny real VLMs: the formula, Best-of-N prefix sharing, edge cases, loading."""

import copy
import random

import pytest
import torch
from huggingface_hub import HfApi
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl.data_utils import prepare_multimodal_messages
from trl.trainer.utils import get_callable_name

from rlaifv_testbed import ShapesWorld
from rlaifv_testbed.data import assistant_turn, user_turn
from rlaifv_trl import LengthNormalizedRewardScorer


pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = user_turn("Describe the image.")


def load(path):
    return AutoModelForImageTextToText.from_pretrained(path)


def scene_and_answers(seed=3):
    world, rng = ShapesWorld(), random.Random(seed)
    scene = world.scene(seed)
    answers = [scene.description(), world.hallucinated_description(scene, rng)[0], "There is", "A blue", "Yes."]
    return scene.render(), answers


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def models(request, tiny_vlm_dirs):
    arch = request.param
    return (
        load(tiny_vlm_dirs[f"{arch}_policy"]),
        load(tiny_vlm_dirs[arch]),
        AutoProcessor.from_pretrained(tiny_vlm_dirs[arch]),
    )


def answer_log_probs_by_hand(model, processor, image, answer):
    """Log-probs of the answer tokens from one plain forward over the chat-template rendering of prompt + answer."""
    prompt_text = processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    full_text = processor.apply_chat_template(PROMPT + assistant_turn(answer), tokenize=False)
    answer_ids = processor.tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    inputs = processor(text=[prompt_text], images=[image], return_tensors="pt")
    prompt_length = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([answer_ids])], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros((1, len(answer_ids)), dtype=torch.long)], 1
        )
    with torch.no_grad():
        logps = model(**inputs).logits[0].log_softmax(-1)
    return logps[prompt_length - 1 : -1].gather(-1, torch.tensor(answer_ids)[:, None]).squeeze(-1)


def test_score_is_the_length_normalized_log_ratio(models):
    policy, reference, processor = models
    image, answers = scene_and_answers()
    scorer = LengthNormalizedRewardScorer(policy, reference, processor, beta=0.3)
    plain = LengthNormalizedRewardScorer(policy, reference, processor, beta=0.3, length_normalize=False)
    scores = scorer.score([PROMPT] * len(answers), [image] * len(answers), answers)
    sums = plain.score([PROMPT] * len(answers), [[image]] * len(answers), [assistant_turn(a) for a in answers])
    for answer, score, summed in zip(answers, scores, sums):
        ratio = answer_log_probs_by_hand(policy, processor, image, answer) - answer_log_probs_by_hand(
            reference, processor, image, answer
        )
        assert summed == pytest.approx(0.3 * ratio.sum().item(), abs=1e-5)
        assert score == pytest.approx(0.3 * ratio.mean().item(), abs=1e-6)


def test_best_of_n_encodes_the_prefix_once_and_matches_one_by_one_scoring(models):
    policy, reference, processor = models
    image, answers = scene_and_answers(seed=5)
    scorer = LengthNormalizedRewardScorer(policy, reference, processor)
    calls = []
    handle = policy.register_forward_hook(lambda *args: calls.append(1))
    try:
        result = scorer.best_of_n(PROMPT, image, answers)
    finally:
        handle.remove()
    assert len(calls) == 2  # the prompt + image prefix once, then every answer in one batch
    one_by_one = [scorer.score([PROMPT], [image], [answer], share_prefix=False)[0] for answer in answers]
    assert result.scores == pytest.approx(one_by_one, abs=1e-4)
    assert result.index == max(range(len(answers)), key=lambda i: one_by_one[i])
    assert result.best == answers[result.index]


def test_a_peft_policy_without_reference_is_scored_against_its_base(tiny_vlm_dirs):
    path = tiny_vlm_dirs["llava"]
    processor = AutoProcessor.from_pretrained(path)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # a non-zero adapter
    peft_model = get_peft_model(load(path), lora)
    merged = copy.deepcopy(peft_model).merge_and_unload()
    image, answers = scene_and_answers()
    with_adapter = LengthNormalizedRewardScorer(peft_model, processor=processor).score(
        [PROMPT] * 5, [image] * 5, answers
    )
    expected = LengthNormalizedRewardScorer(merged, load(path), processor).score([PROMPT] * 5, [image] * 5, answers)
    assert with_adapter == pytest.approx(expected, abs=1e-5)
    assert any(abs(score) > 1e-4 for score in with_adapter)
    with pytest.raises(ValueError, match="needs a reference"):
        LengthNormalizedRewardScorer(load(path), processor=processor)


def test_empty_and_overlong_answers_have_defined_scores(models):
    policy, reference, processor = models
    image, _ = scene_and_answers()
    scorer = LengthNormalizedRewardScorer(policy, reference, processor)
    empty, long_a, long_b = scorer.score([PROMPT] * 3, [image] * 3, ["", "red " * 2000, "red " * 1500 + "blue " * 500])
    assert isinstance(empty, float)  # scored on its end-of-turn tokens
    assert long_a == pytest.approx(long_b, abs=1e-6)  # both cut to the same first tokens at max_length
    prompt_text = processor.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    prompt_length = processor(text=[prompt_text], images=[image], return_tensors="pt")["input_ids"].shape[1]
    short = LengthNormalizedRewardScorer(policy, reference, processor, max_length=prompt_length)
    assert short.score([PROMPT, PROMPT], [image, image], ["There is", ""]) == [None, None]  # nothing left to score
    assert short.best_of_n(PROMPT, image, ["a", "b"]).index is None
    plain_prompt = prompt_text  # already rendered: a plain-text answer gets the EOS token
    assert isinstance(scorer.score([plain_prompt], [image], [""])[0], float)
    rendered = scorer.score(
        [plain_prompt] * 2, [image] * 2, ["There is a red circle.", assistant_turn("There is a red circle.")]
    )
    assert rendered[0] == rendered[1]


def test_plugs_into_trl_as_a_reward_function(models):
    policy, reference, processor = models
    image, answers = scene_and_answers()
    scorer = LengthNormalizedRewardScorer(policy, reference, processor)
    assert get_callable_name(scorer) == "length_normalized_reward"
    assert not isinstance(scorer, torch.nn.Module)  # TRL would treat a Module as a sequence classifier
    expected = scorer.score([PROMPT] * 5, [image] * 5, answers)
    conversational = [[{"role": "assistant", "content": answer}] for answer in answers]
    columns = {"completion_ids": [[0]] * 5, "trainer_state": None, "prompt_id": ["x"] * 5}
    assert scorer(prompts=[PROMPT] * 5, completions=conversational, images=[[image]] * 5, **columns) == expected
    assert scorer(prompts=[PROMPT] * 5, completions=answers, image=[image] * 5, **columns) == expected
    embedded = [prepare_multimodal_messages(PROMPT, images=[image]) for _ in answers]  # as GRPOTrainer passes them
    assert scorer(prompts=embedded, completions=conversational, images=[[image]] * 5, **columns) == expected


def test_loads_from_the_hub_and_from_an_adapter_directory(tiny_vlm_dirs, hub, hub_repo_id, tmp_path):
    policy_dir, reference_dir = tiny_vlm_dirs["llava_policy"], tiny_vlm_dirs["llava"]
    api = HfApi()
    reference_repo = f"{hub_repo_id}-reference"
    for repo, folder in ((hub_repo_id, policy_dir), (reference_repo, reference_dir)):
        api.create_repo(repo)
        api.upload_folder(folder_path=folder, repo_id=repo)
    image, answers = scene_and_answers()
    processor = AutoProcessor.from_pretrained(policy_dir)
    expected = LengthNormalizedRewardScorer(load(policy_dir), load(reference_dir), processor).score(
        [PROMPT] * 5, [image] * 5, answers
    )
    from_hub = LengthNormalizedRewardScorer.from_pretrained(hub_repo_id, reference_repo, beta=0.1)  # none recorded
    assert from_hub.score([PROMPT] * 5, [image] * 5, answers) == pytest.approx(expected, abs=1e-6)

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = get_peft_model(load(reference_dir), lora)
    adapter.save_pretrained(tmp_path / "adapter")  # no processor saved with it: taken from the base model
    from_adapter = LengthNormalizedRewardScorer.from_pretrained(tmp_path / "adapter", beta=0.2)
    in_memory = LengthNormalizedRewardScorer(adapter, processor=processor, beta=0.2)
    assert from_adapter.score([PROMPT] * 5, [image] * 5, answers) == pytest.approx(
        in_memory.score([PROMPT] * 5, [image] * 5, answers), abs=1e-6
    )
