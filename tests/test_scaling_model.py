"""The time model of a paper-scale run (`benchmarks/scaling_model.py`): its arithmetic against hand-computed cases,
the recommended settings within 8 hours, and `docs/scaling.md` showing what the model prints."""

import importlib.util
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml


ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("scaling_model", ROOT / "benchmarks" / "scaling_model.py")
model = importlib.util.module_from_spec(_spec)
sys.modules["scaling_model"] = model  # dataclasses look their module up
_spec.loader.exec_module(model)


def test_parameter_counts_equal_transformers():
    # Counted once by instantiating LlavaConfig / LlavaNextConfig / LlamaConfig with the Hub configs' sizes on the
    # meta device (transformers 5.23): the model cards' 7B, 34B and 8B.
    assert model.LLAVA_15_7B.vision.params == 303_507_456
    assert model.LLAVA_15_7B.projector_params == 20_979_712
    assert model.LLAVA_15_7B.params == 7_063_427_072
    assert model.LLAVA_NEXT_34B.params == 34_752_083_968
    assert model.LLAMA_3_8B.params == 8_030_261_248
    assert model.LLAVA_15_7B.vision.tokens == 577


def test_a_forward_pass_is_two_flops_per_weight_and_token_plus_attention():
    # By hand: 1 layer, hidden 4, MLP 8, 2 heads of 2 dims, 1 KV head, vocabulary 10.
    tiny = model.Decoder(layers=1, hidden=4, intermediate=8, heads=2, kv_heads=1, vocab=10)
    assert tiny.kv_dim == 2
    assert tiny.matmul_params == 4 * 4 + 4 * 4 + 2 * 4 * 2 + 3 * 4 * 8  # q, o, k and v, gate/up/down = 144
    assert tiny.params == 10 * 4 * 2 + 144 + 2 * 4 + 4  # embeddings, LM head, layer, norms = 236
    # 3 tokens: 2 x (144 + 40) x 3 = 1,104; attention 4 x 1 x 4 x (1 + 2 + 3) = 96
    assert tiny.forward_flops(3) == 1104 + 96
    assert tiny.forward_flops(3, head=False) == 2 * 144 * 3 + 96
    # after 5 cached tokens the 3 new ones attend to 6, 7 and 8 positions
    assert tiny.forward_flops(3, past=5, head=False) == 2 * 144 * 3 + 4 * 4 * (6 + 7 + 8)
    assert tiny.kv_bytes_per_token() == 2 * 1 * 2 * 2  # K and V, 1 layer, 2 dims, bf16
    # LLaVA-1.5-7B's language model: 2 x weights x tokens is the bulk of a forward pass over a pair's row
    lm = model.LLAVA_15_7B.language
    weights = lm.params - lm.vocab * lm.hidden - (2 * lm.layers + 1) * lm.hidden  # less embeddings and norms
    assert lm.forward_flops(1000) - 4 * lm.layers * lm.hidden * 1000 * 1001 / 2 == 2 * weights * 1000


def test_training_counts_six_or_eight_forward_weights_with_activation_checkpointing():
    v = model.values()
    with_checkpointing, vision = model.dpo_pair_flops(model.PAPER, v)
    without, vision_without = model.dpo_pair_flops(replace(model.PAPER, activation_checkpointing=False), v)
    assert with_checkpointing / without == pytest.approx(8 / 6) and vision / vision_without == pytest.approx(8 / 6)
    row = model.policy_prompt_tokens(v) + v["answer_tokens"]
    assert without == 2 * 3 * model.LLAVA_15_7B.language.forward_flops(row)
    _, twice = model.dpo_pair_flops(replace(model.PAPER, encode_images_once=False), v)
    assert twice == 2 * vision


def test_the_vision_tower_is_a_small_share_of_a_dpo_step():
    share = model.vision_share()
    # 0.3B over 577 tokens against 6.7B over two rows of ~740 tokens: about 2%, not the 16% of the tiny benchmark model
    assert 0.015 < share["encode_images_once_saving"] < 0.025
    assert share["vision_share_of_step"] == pytest.approx(2 * share["encode_images_once_saving"], rel=0.05)


def test_decoding_reads_the_weights_once_per_step():
    v = model.values(step_overhead_s=0.0)
    engines = model.Engines(1, v)
    lm = model.LLAMA_3_8B
    step = engines.step_seconds(lm, batch=1, context=0)
    assert step == pytest.approx(lm.weight_bytes() / (v["hbm_bytes_per_s"] * v["hbm_efficiency"]))
    assert 10e-3 < step < 11e-3  # 16 GB at 77% of 2 TB/s
    assert engines.step_seconds(lm, batch=1000, context=0) > step  # a large batch becomes compute-bound
    assert model.Engines(4, v).count == 2


def test_work_per_iteration_matches_hand_counts():
    v = model.values()
    assert model.claim_tokens(v) == pytest.approx(116.4 / 10)
    stages = {stage.name: stage for stage in model.iteration(model.PAPER, v)}
    assert "400k questions" in stages["labeling"].detail  # 4,000 x 10 x 10
    assert "5.5M tokens generated" in stages["sampling"].detail  # 4,000 x 10 x 138.5
    language, vision = model.dpo_pair_flops(model.PAPER, v)
    assert stages["DPO training"].seconds == pytest.approx(
        8000 * 4 * (language + vision) / (8 * 312e12 * v["mfu_train"])
    )


def test_the_recommended_settings_take_at_most_eight_hours():
    assert model.total_hours(model.RECOMMENDED) <= 8.0
    assert model.total_hours(model.PAPER) > model.total_hours(model.RECOMMENDED)
    # the pipeline's divide stage sends a shard's records together; one engine call per prompt costs far more
    per_prompt = replace(model.RECOMMENDED, divide_per_shard=False)
    assert model.total_hours(per_prompt) > model.total_hours(model.RECOMMENDED) + 1
    for case, overrides in model.SENSITIVITY:  # every case is computed
        assert model.total_hours(model.RECOMMENDED, model.values(**overrides)) > 0, case
    assert model.break_even(model.RECOMMENDED, "mfu_train") < model.INPUTS["mfu_train"].value


def test_every_input_is_measured_or_assumed_with_a_source():
    for name, item in model.INPUTS.items():
        assert item.kind in {"measured", "assumed"}, name
        assert len(item.source) > 10, name
    with pytest.raises(KeyError):
        model.values(no_such_input=1)


def test_the_recommended_config_holds_the_recommended_settings():
    config = yaml.safe_load((ROOT / "recipes" / "configs" / "llava15_7b_vllm.yaml").read_text())
    settings = model.RECOMMENDED
    assert config["vllm_tensor_parallel_size"] == settings.tensor_parallel
    assert config["sampling_batch_size"] == settings.sampling_batch_size
    assert config["splitter_batch_size"] == settings.splitter_batch_size
    assert config["labeler_batch_size"] == settings.labeler_batch_size
    assert config["activation_checkpointing"] is settings.activation_checkpointing
    assert config.get("shard_size", 16) == settings.shard_size
    paper = yaml.safe_load((ROOT / "recipes" / "configs" / "llava15_7b.yaml").read_text())
    assert paper["activation_checkpointing"] is model.PAPER.activation_checkpointing
    assert paper["vllm_tensor_parallel_size"] == model.PAPER.tensor_parallel
    for key in ("num_candidates", "prompts_per_iteration", "num_iterations", "num_train_epochs", "learning_rate"):
        assert config[key] == paper[key], key  # the paper's run, only faster


def test_clause_count_of_a_hand_written_answer():
    answer = "There is a red car, a dog and a tree. The sky is blue."
    assert model.clause_claims(answer) == 4  # "There is a red car" / "a dog" / "a tree." and the second sentence


def test_the_doc_shows_what_the_model_prints():
    doc = (ROOT / "docs" / "scaling.md").read_text()
    for name, block in model.doc_blocks().items():
        shown = re.search(rf"<!-- scaling-model:{name}:start -->\n(.*?)\n<!-- scaling-model:{name}:end -->", doc, re.S)
        assert shown is not None, f"docs/scaling.md lacks the {name} markers"
        assert shown.group(1) == block, "regenerate: python benchmarks/scaling_model.py --write-doc docs/scaling.md"
