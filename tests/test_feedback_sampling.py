"""Deconfounded sampling: n candidates per prompt, several prompts per generate call, each candidate seeded."""

import dataclasses

import pytest
import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rlaifv_testbed import prompt_dataset
from rlaifv_trl.feedback import CandidateSampler, FeedbackConfig, derive_seed
from rlaifv_trl.feedback.sampling import SeededSampling
from rlaifv_trl.loading import ModelLoading


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def vlm(request, tiny_vlm_dir):
    path = tiny_vlm_dir(request.param)
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def test_same_seed_same_candidates_other_seed_other_candidates(vlm, one_thread):
    model, processor = vlm
    row = prompt_dataset(1)[0]
    sampler = CandidateSampler(model, processor, num_candidates=4, max_new_tokens=10)
    first = sampler.sample(row["prompt"], row["images"], seed=11)
    assert len(first) == 4 and all(isinstance(text, str) for text in first)
    assert sampler.sample(row["prompt"], row["images"], seed=11) == first
    assert sampler.sample(row["prompt"], row["images"], seed=12) != first
    assert len(set(first)) > 1  # the n answers of one prompt differ (sampling, not n copies)


def test_one_generate_call_with_the_prompt_expanded_to_n_rows(vlm, one_thread):
    model, processor = vlm
    row = prompt_dataset(1)[0]
    batches, vision_calls = [], []
    language_model = model.model.language_model
    vision = getattr(model.model, "vision_tower", None) or model.model.visual
    hooks = [
        language_model.register_forward_pre_hook(
            lambda module, args, kwargs: batches.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True
        ),
        vision.register_forward_hook(lambda *args: vision_calls.append(1)),
    ]
    try:
        CandidateSampler(model, processor, num_candidates=5, max_new_tokens=6).sample(row["prompt"], row["images"], 0)
    finally:
        for hook in hooks:
            hook.remove()
    assert batches and set(batches) == {5}  # every decoding step runs the 5 candidates together
    assert len(vision_calls) == 1  # the image is encoded once, then expanded


def test_candidates_do_not_depend_on_the_prompts_sampled_beside_them(vlm, one_thread):
    model, processor = vlm
    rows = prompt_dataset(6, start_seed=40)
    sampler = CandidateSampler(model, processor, num_candidates=3, temperature=1.0, max_new_tokens=12)
    alone = [sampler.sample(row["prompt"], row["images"], seed=100 + i) for i, row in enumerate(rows)]
    together = sampler.sample_batch(rows["prompt"], rows["images"], [100 + i for i in range(len(rows))])
    shuffled = sampler.sample_batch(rows["prompt"][::-1], rows["images"][::-1], [105 - i for i in range(len(rows))])
    assert together == alone == shuffled[::-1]
    assert len({answer for answers in alone for answer in answers}) > len(rows)  # they are samples, not copies


def test_both_sampling_backends_sample_with_the_configs_settings(tiny_vlm_dir):
    """`FeedbackConfig.sampling`, built once, reaches the transformers and the vLLM sampler alike (the vLLM engine
    is started at first use only: none runs here)."""
    from accelerate import PartialState

    from rlaifv_trl.feedback.backend_factory import make_sampler
    from rlaifv_trl.feedback.roles import feedback_models

    kwargs = {"repetition_penalty": 1.1}
    settings = {"num_candidates": 3, "temperature": 0.9, "top_p": 0.8, "top_k": 5, "max_new_tokens": 7}
    args = FeedbackConfig(**settings, generation_kwargs=kwargs, labeler_backend="vllm")
    path, state = str(tiny_vlm_dir("llava")), PartialState()
    policy, _ = feedback_models(args, path, None, None, None, ModelLoading())
    local = make_sampler(args, policy, state)
    served = make_sampler(dataclasses.replace(args, sampling_backend="vllm"), policy, state)
    assert (local.num_candidates, local.temperature, local.top_p, local.top_k) == (3, 0.9, 0.8, 5)
    assert local.generation["max_new_tokens"] == 7 and local.generation["repetition_penalty"] == 1.1
    assert served.num_candidates == 3 and served._engine is None
    assert {key: served.sampling[key] for key in ("temperature", "top_p", "top_k", "max_tokens", *kwargs)} == {
        "temperature": 0.9, "top_p": 0.8, "top_k": 5, "max_tokens": 7, **kwargs,
    }  # fmt: skip


def test_seeded_sampling_draws_from_the_warped_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    for temperature, top_k, top_p in [(1.0, None, None), (0.5, None, None), (1.0, 3, None), (1.0, None, 0.8)]:
        expected = LogitsProcessorList(
            [TemperatureLogitsWarper(temperature)]
            + ([TopKLogitsWarper(top_k)] if top_k else [])
            + ([TopPLogitsWarper(top_p)] if top_p else [])
        )(None, logits.clone()).softmax(-1)[0]
        generators = [torch.Generator().manual_seed(seed) for seed in range(4000)]
        sampling = SeededSampling(generators, temperature, top_k, top_p)
        scores = sampling(None, logits.repeat(len(generators), 1))
        assert (torch.isfinite(scores).sum(-1) == 1).all()  # one token left per row
        counts = torch.bincount(scores.argmax(-1), minlength=logits.shape[1]).float() / len(generators)
        assert torch.allclose(counts, expected, atol=0.03), (temperature, top_k, top_p, counts, expected)
        assert (counts[expected == 0] == 0).all()  # filtered tokens are never drawn


def test_prompt_seeds_depend_only_on_base_seed_prompt_id_and_purpose():
    seeds = {derive_seed(42, f"p{i}", "candidates") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= seed < 2**31 for seed in seeds)
    assert derive_seed(42, "p1", "candidates") == derive_seed(42, "p1", "candidates")
    assert derive_seed(42, "p1", "candidates") != derive_seed(43, "p1", "candidates")
    assert derive_seed(42, "p1", "candidates") != derive_seed(42, "p1", "claims")


def test_config_has_the_paper_defaults_and_checks_values():
    config = FeedbackConfig()
    assert (config.num_candidates, config.temperature, config.max_new_tokens) == (10, 0.7, 512)
    assert (config.min_score_gap, config.pairs_per_prompt, config.length_balancing) == (1.0, 2, True)
    assert config.confirmed_claim_weight == 0.0  # the paper's score: minus the rejected claims
    assert (config.splitter_temperature, config.splitter_top_p, config.splitter_max_new_tokens) == (0.2, 0.9, 256)
    assert config.splitter_max_input_words == 300 and config.top_p is None
    assert config.yes_no_instruction == "Please answer yes or no."
    assert not config.labeler_trust_remote_code and not config.splitter_trust_remote_code
    for field_name in (field.name for field in dataclasses.fields(config)):
        assert config.__dataclass_fields__[field_name].metadata.get("help"), field_name
        assert f"{field_name} (`" in FeedbackConfig.__doc__, field_name
    for bad, message in [
        ({"num_candidates": 0}, "num_candidates"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_score_gap": 0}, "min_score_gap"),
        ({"pairs_per_prompt": 0}, "pairs_per_prompt"),
        ({"shard_size": 0}, "shard_size"),
        ({"length_balancing_step": 1.0}, "length_balancing_step"),
        ({"yes_no_instruction": " "}, "yes_no_instruction"),
        ({"generation_kwargs": {"temperature": 1.0}}, "generation_kwargs"),
        ({"labeler_load_in_4bit": True, "labeler_load_in_8bit": True}, "4-bit and 8-bit"),
    ]:
        with pytest.raises(ValueError, match=message):
            FeedbackConfig(**bad)
