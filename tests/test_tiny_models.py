"""The tiny offline VLMs: real models that load back through the Auto classes and behave like VLMs."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import PRESETS, YES_NO_WORDS, ShapesWorld, available_architectures, build_tiny_vlm
from rlaifv_testbed.data import user_turn
from rlaifv_testbed.models import count_parameters
from rlaifv_trl.generation import encode, generate_batch, render_prompts


ARCHS = ["llava", "llava_next", "qwen2_vl", "qwen2_5_vl"]


def test_every_architecture_is_available_here():
    # The Qwen2-VL family needs torchvision, which the test environment installs: its tests must run, not skip.
    from rlaifv_testbed.families import FAMILIES

    assert available_architectures() == list(FAMILIES)


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    path = build_tiny_vlm(tmp_path_factory.mktemp(request.param), arch=request.param, preset="tiny", seed=0)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    return request.param, path, model, processor


def test_loads_back_through_the_auto_classes(tiny):
    arch, path, model, processor = tiny
    assert model.config.model_type == arch
    assert (path / "model.safetensors").exists()
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
    assert processor.tokenizer.padding_side == "left"
    assert processor.tokenizer.eos_token == "<|im_end|>"


def test_yes_and_no_are_single_tokens(tiny):
    tokenizer = tiny[3].tokenizer
    for word in YES_NO_WORDS:
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1


def test_sampling_is_seeded(tiny):
    _, _, model, processor = tiny
    prompts, images = [user_turn("Describe the image.")], [[ShapesWorld().scene(1).render()]]

    def sample(seed):
        torch.manual_seed(seed)
        return generate_batch(model, processor, prompts, images, do_sample=True, max_new_tokens=12)[0]

    assert sample(0) == sample(0)
    texts = {sample(seed) for seed in range(4)}
    assert len(texts) > 1


def test_the_image_changes_the_logits(tiny):
    _, _, model, processor = tiny
    world = ShapesWorld()
    texts = render_prompts(processor, [user_turn("Describe the image.")] * 2)
    inputs = encode(processor, texts, [[world.scene(1).render()], [world.scene(2).render()]], model.device)
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_same_weights(arch, tmp_path):
    a = load_file(build_tiny_vlm(tmp_path / "a", arch, seed=3) / "model.safetensors")
    b = load_file(build_tiny_vlm(tmp_path / "b", arch, seed=3) / "model.safetensors")
    c = load_file(build_tiny_vlm(tmp_path / "c", arch, seed=4) / "model.safetensors")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("preset", "low", "high"), [("tiny", 120_000, 300_000), ("small", 700_000, 1_300_000)])
def test_preset_sizes(arch, preset, low, high, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(build_tiny_vlm(tmp_path, arch, preset))
    assert low < count_parameters(model) < high
    assert preset in PRESETS


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_tiny_causal_lms_chat_in_their_familys_format(family, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlaifv_testbed.models import build_tiny_causal_lm

    path = build_tiny_causal_lm(tmp_path, family)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Split."}], add_generation_prompt=True, tokenize=False
    )
    header = "<|start_header_id|>assistant<|end_header_id|>\n\n" if family == "llama" else "<|im_start|>assistant\n"
    assert text.endswith(header)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    assert len(tokenizer.convert_ids_to_tokens(ids["input_ids"][0])) < len(text) / 2  # markup tokens are single tokens
    output = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[1] > ids["input_ids"].shape[1]
