"""Every supported vision-language family, for real, on every path of the project.

For each family of `rlaifv_testbed.families.FAMILIES` (a tiny stand-in of its own classes, tokenizer markup,
chat template and image processor):
- n-way sampling, reproducible and independent of the prompts sampled beside it;
- the labeler's prefix-shared yes/no probabilities equal a plain per-question forward within 1e-4;
- reference log-probs equal `trl.DPOTrainer`'s own computation within 1e-4;
- a `RLAIFVDPOTrainer` step, with and without LoRA;
- the loss and gradients of a step with each image encoded once per pair equal those of TRL's (twice);
- the scorer's Best-of-N equals scoring the answers one by one;
- one iteration of the recipe.
The largest differences measured are written to `family_matrix.json` in the session's temporary folder.
"""

import json

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import DPOConfig, DPOTrainer

from rlaifv_testbed import ShapesWorld, oracle_preference_dataset, prompt_dataset
from rlaifv_testbed.families import FAMILIES
from rlaifv_trl import LengthNormalizedRewardScorer, RLAIFVDPOTrainer, precompute_ref_log_probs
from rlaifv_trl.feedback import CandidateSampler, LabelGroup, YesNoLabeler
from rlaifv_trl.feedback.labeler import labeler_messages


NAMES = list(FAMILIES)
QUESTIONS = [
    "Is there a red circle in the image? Please answer yes or no.",
    "Is there no blue square in the image? Please answer yes or no.",
    "Are there two yellow squares next to each other, one above the other? Please answer yes or no.",
]
MEASURED: dict[str, dict[str, float]] = {}
# Families whose processor packs every image of a batch into one row of pixel values.
PACKED_PIXELS = {"minicpmv4_6"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def write_measurements(tmp_path_factory):
    yield
    path = tmp_path_factory.getbasetemp() / "family_matrix.json"
    path.write_text(json.dumps(MEASURED, indent=2, sort_keys=True))


def load(path):
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def measure(family: str, key: str, value: float) -> None:
    MEASURED.setdefault(family, {})[key] = max(value, MEASURED.get(family, {}).get(key, 0.0))


@pytest.mark.parametrize("family", NAMES)
def test_the_stand_in_loads_through_the_auto_classes_with_its_familys_markup(family, tiny_vlm_dir):
    model, processor = load(tiny_vlm_dir(family))
    assert model.config.model_type == family
    prompt = prompt_dataset(1)[0]
    text = processor.apply_chat_template(prompt["prompt"], add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=prompt["images"], return_tensors="pt", add_special_tokens=False)
    image_token_id = getattr(model.config, "image_token_id", None)
    if image_token_id is None:
        image_token = getattr(processor, "image_token", None) or processor.tokenizer.image_token
        image_token_id = processor.tokenizer.convert_tokens_to_ids(image_token)
    assert (inputs["input_ids"] == image_token_id).sum() > 1  # the placeholder is expanded to the image's tokens


@pytest.mark.parametrize("family", NAMES)
def test_sampling(family, tiny_vlm_dir):
    model, processor = load(tiny_vlm_dir(family))
    rows = prompt_dataset(2, start_seed=60)
    sampler = CandidateSampler(model, processor, num_candidates=3, temperature=1.0, max_new_tokens=8)
    alone = [sampler.sample(row["prompt"], row["images"], seed=7 + i) for i, row in enumerate(rows)]
    assert sampler.sample_batch(rows["prompt"], rows["images"], [7, 8]) == alone
    assert all(len(answers) == 3 for answers in alone) and len({a for answers in alone for a in answers}) > 2


@pytest.mark.parametrize("family", NAMES)
def test_the_labelers_prefix_sharing_equals_plain_forwards(family, tiny_vlm_dir):
    model, processor = load(tiny_vlm_dir(family, seed=1))
    labeler = YesNoLabeler(model, processor)
    world = ShapesWorld()
    for seed in (3, 4):
        images = [world.scene(seed).render()]
        labels = labeler.label_group(LabelGroup(images, QUESTIONS))
        for question, label in zip(QUESTIONS, labels):
            plain = plain_label(model, processor, images, question)
            difference = max(abs(label.p_yes - plain[0]), abs(label.p_no - plain[1]))
            measure(family, "labeler_max_difference", difference)
            assert difference < 1e-4, (question, label, plain)


def plain_label(model, processor, images, question):
    text = processor.apply_chat_template(
        labeler_messages(len(images), question), add_generation_prompt=True, tokenize=False
    )
    inputs = processor(text=[text], images=images, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        probs = model(**inputs).logits[0, -1].float().softmax(-1)
    ids = {word: processor.tokenizer.convert_tokens_to_ids(word) for word in ("yes", "Yes", "no", "No")}
    return float(probs[ids["yes"]] + probs[ids["Yes"]]), float(probs[ids["no"]] + probs[ids["No"]])


@pytest.mark.parametrize("family", NAMES)
def test_reference_log_probs_equal_dpo_trainers(family, tiny_vlm_dir, dpo_args):
    reference = tiny_vlm_dir(family)
    processor = AutoProcessor.from_pretrained(reference)
    data = oracle_preference_dataset(3)
    columns = precompute_ref_log_probs(load(reference)[0], processor, data, batch_size=2)
    trainer = DPOTrainer(
        model=load(tiny_vlm_dir(family, seed=1))[0], ref_model=load(reference)[0], args=dpo_args(DPOConfig),
        train_dataset=data, processing_class=processor,
    )  # fmt: skip
    batch = trainer._prepare_inputs(trainer.data_collator(list(data)))
    expected = torch.stack(trainer.compute_ref_log_probs(trainer.ref_model, batch), dim=1)
    computed = torch.tensor([columns["ref_chosen_logps"], columns["ref_rejected_logps"]]).T
    measure(family, "reference_log_probs_max_difference", float((computed - expected).abs().max()))
    torch.testing.assert_close(computed, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("family", NAMES)
def test_a_dpo_step(family, lora, tiny_vlm_dir, dpo_args):
    path = tiny_vlm_dir(family)
    model = load(path)[0]
    before = {name: value.clone() for name, value in model.named_parameters()}
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]) if lora else None
    trainer = RLAIFVDPOTrainer(
        model=model, args=dpo_args(max_steps=1, learning_rate=1e-3, warmup_steps=0, precompute_ref_log_probs=True),
        train_dataset=oracle_preference_dataset(2), processing_class=AutoProcessor.from_pretrained(path),
        peft_config=peft_config,
    )  # fmt: skip
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    trained = dict(trainer.model.named_parameters())
    if lora:
        adapters = [name for name in trained if "lora_" in name]
        assert adapters and any(not torch.equal(trained[name], torch.zeros_like(trained[name])) for name in adapters)
        frozen = {
            name.replace("base_model.model.", "").replace(".base_layer", ""): value for name, value in trained.items()
        }
        assert all(torch.equal(before[name], frozen[name]) for name in before if name in frozen)
    else:
        assert any(not torch.equal(before[name], value) for name, value in trained.items())


@pytest.mark.parametrize("family", NAMES)
def test_images_encoded_once_per_pair_give_the_same_loss_and_gradients(family, tiny_vlm_dir, dpo_args):
    path = tiny_vlm_dir(family)
    data = oracle_preference_dataset(2)
    losses, gradients = {}, {}
    for once in (False, True):
        model = load(path)[0]
        trainer = RLAIFVDPOTrainer(
            model=model, args=dpo_args(precompute_ref_log_probs=True, encode_images_once=once),
            train_dataset=data, processing_class=AutoProcessor.from_pretrained(path),
        )  # fmt: skip
        batch = trainer._prepare_inputs(trainer.data_collator(list(trainer.train_dataset)))
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        losses[once] = loss.detach()
        gradients[once] = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        if once and family in PACKED_PIXELS:  # nothing to halve: the tower runs on every image, as without
            assert trainer.image_features_sharing.num_shared == 0 and trainer.image_features_sharing.num_whole >= 1
        elif once:
            assert trainer.image_features_sharing.num_shared >= 1 and trainer.image_features_sharing.num_whole == 0
    vision = [name for name in gradients[False] if any(key in name for key in ("vision", "visual", "projector"))]
    assert vision and gradients[False].keys() == gradients[True].keys()
    difference = max(float((gradients[False][n] - gradients[True][n]).abs().max()) for n in gradients[False])
    measure(family, "encode_images_once_max_gradient_difference", difference)
    torch.testing.assert_close(losses[True], losses[False], atol=1e-5, rtol=0)
    assert difference < 1e-4


@pytest.mark.parametrize("family", NAMES)
def test_best_of_n_equals_one_by_one_scoring(family, tiny_vlm_dir):
    policy, processor = load(tiny_vlm_dir(family, seed=1))
    reference, _ = load(tiny_vlm_dir(family))
    scene = ShapesWorld().scene(9)
    answers = [scene.description(), scene.description() + " There is a red circle.", "There is a blue square."]
    prompt = prompt_dataset(1)[0]["prompt"]
    scorer = LengthNormalizedRewardScorer(policy, reference, processor)
    result = scorer.best_of_n(prompt, scene.render(), answers)
    one_by_one = [scorer.score([prompt], [scene.render()], [answer], share_prefix=False)[0] for answer in answers]
    measure(family, "best_of_n_max_difference", max(abs(a - b) for a, b in zip(result.scores, one_by_one)))
    assert result.scores == pytest.approx(one_by_one, abs=1e-4)
    assert result.index == max(range(len(answers)), key=lambda i: one_by_one[i])


@pytest.mark.parametrize("family", NAMES)
@pytest.mark.slow
def test_one_recipe_iteration(family, tiny_vlm_dir, tmp_path):
    import shutil

    from support.stand_ins import undecided_labeler
    from test_recipe import done, recipe_args, run_recipe

    policy = undecided_labeler(shutil.copytree(tiny_vlm_dir(family), tmp_path / "policy"))  # it labels itself
    argv = recipe_args(policy, tmp_path / "run", "--num_iterations", "1", "--labeler_model_name_or_path", "None")
    run_recipe([*argv, "--prompts_per_iteration", "8", "--evaluation_prompts", "4"])
    state = done(tmp_path / "run")
    assert state["1"]["feedback"]["num_pairs"] > 0 and state["1"]["train"]["global_step"] > 0
    assert (
        AutoModelForImageTextToText.from_pretrained(tmp_path / "run" / "models" / "iteration-1").config.model_type
        == family
    )


def test_sequences_longer_than_a_sliding_window_get_plain_forwards(tiny_vlm_dir, caplog):
    """Gemma 3's sliding-window layers keep only the window in the cache: past it, prefix sharing would differ."""
    model, processor = load(tiny_vlm_dir("gemma3", seed=1))
    model.config.get_text_config().sliding_window = 8
    reference, _ = load(tiny_vlm_dir("gemma3"))
    reference.config.get_text_config().sliding_window = 8
    images = [ShapesWorld().scene(3).render()]
    labeler = YesNoLabeler(model, processor)
    labels = labeler.label_group(LabelGroup(images, QUESTIONS))
    assert labeler.num_full_forwards == len(QUESTIONS) and "sliding window (8)" in caplog.text
    for question, label in zip(QUESTIONS, labels):
        plain = plain_label(model, processor, images, question)
        assert abs(label.p_yes - plain[0]) < 1e-4 and abs(label.p_no - plain[1]) < 1e-4
    scorer = LengthNormalizedRewardScorer(model, reference, processor)
    answers = ["There is a red circle.", "There is a blue square and a green triangle."]
    prompt = prompt_dataset(1)[0]["prompt"]
    shared = scorer.score([prompt] * 2, [images] * 2, answers)
    assert shared == pytest.approx(scorer.score([prompt] * 2, [images] * 2, answers, share_prefix=False), abs=1e-6)
