"""Every model-loading option reaches `from_pretrained`: TRL's `ModelConfig` for the policy, and the labeler's and
splitter's own options, checked by their effect on the loaded models and on real recipe runs.

Quantization runs for real: bitsandbytes (a test dependency) quantizes to 4 and 8 bits on CPUs too.
"""

import dataclasses
import json
import shutil

import pytest
import torch
from bitsandbytes.nn import Linear4bit, Linear8bitLt
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, BitsAndBytesConfig
from trl import ModelConfig

from rlaifv_testbed.models import PRESETS, build_tiny_causal_lm, build_tiny_vlm
from rlaifv_trl import FeedbackConfig, RLAIFVFeedbackGenerator
from rlaifv_trl.loading import ModelLoading, load_causal_lm, load_vlm
from support.stand_ins import undecided_labeler


CONFIGURATION = """from transformers import LlavaConfig


class TinyCustomLlavaConfig(LlavaConfig):
    model_type = "tiny_custom_llava"
"""
MODELING = """from transformers import LlavaForConditionalGeneration

from .configuration_tiny_custom import TinyCustomLlavaConfig


class TinyCustomLlava(LlavaForConditionalGeneration):
    config_class = TinyCustomLlavaConfig
"""


def with_custom_code(source, target):
    """A copy of a tiny LLaVA whose config and model classes come from code in its own folder (its weights under
    the module names: transformers converts LLaVA's saved names for the `llava` model type only)."""
    shutil.copytree(source, target)
    state = AutoModelForImageTextToText.from_pretrained(source).state_dict()
    save_file(
        {name: tensor.contiguous() for name, tensor in state.items()}, target / "model.safetensors", {"format": "pt"}
    )
    (target / "configuration_tiny_custom.py").write_text(CONFIGURATION)
    (target / "modeling_tiny_custom.py").write_text(MODELING)
    config = json.loads((target / "config.json").read_text())
    config["model_type"] = "tiny_custom_llava"
    config["auto_map"] = {
        "AutoConfig": "configuration_tiny_custom.TinyCustomLlavaConfig",
        "AutoModelForImageTextToText": "modeling_tiny_custom.TinyCustomLlava",
    }
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def custom_code_repo(tiny_vlm_dir, tmp_path_factory, hub):
    """A Hub repo whose branch `v2` holds a custom-code tiny LLaVA and whose `main` holds a broken config."""
    folder = with_custom_code(tiny_vlm_dir("llava", seed=2), tmp_path_factory.mktemp("custom") / "model")
    repo = f"{hub.user}/custom-code-llava"
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    api.upload_file(path_or_fileobj=b"{not json", path_in_repo="config.json", repo_id=repo)
    api.create_branch(repo, branch="v2", exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=folder, revision="v2")
    return repo, folder


def test_the_policy_options_of_model_config_all_reach_from_pretrained():
    model_args = ModelConfig(
        model_revision="v2", dtype="bfloat16", attn_implementation="eager", load_in_4bit=True,
        bnb_4bit_quant_type="fp4", use_bnb_nested_quant=True,
    )  # fmt: skip
    kwargs = ModelLoading.from_model_config(model_args, trust_remote_code=True).model_kwargs()
    quantization = kwargs.pop("quantization_config")
    assert kwargs == {
        "revision": "v2", "trust_remote_code": True, "dtype": torch.bfloat16, "attn_implementation": "eager",
        "device_map": {"": "cpu"},
    }  # fmt: skip
    assert isinstance(quantization, BitsAndBytesConfig) and quantization.load_in_4bit
    assert quantization.bnb_4bit_quant_type == "fp4" and quantization.bnb_4bit_use_double_quant
    assert quantization.bnb_4bit_compute_dtype == torch.bfloat16


def test_dtype_attention_and_quantization_take_effect(tiny_vlm_dir):
    path = tiny_vlm_dir("llava")
    model, _ = load_vlm(path, ModelLoading(dtype="bfloat16", attn_implementation="eager"))
    assert next(model.parameters()).dtype == torch.bfloat16 and model.config._attn_implementation == "eager"
    model, _ = load_vlm(path, ModelLoading(attn_implementation="sdpa"))
    assert next(model.parameters()).dtype == torch.float32 and model.config._attn_implementation == "sdpa"
    for option, layer in (("load_in_4bit", Linear4bit), ("load_in_8bit", Linear8bitLt)):
        model, _ = load_vlm(path, ModelLoading(**{option: True}))
        assert isinstance(model.model.language_model.layers[0].self_attn.q_proj, layer), option


def test_revision_and_trust_remote_code_take_effect(custom_code_repo):
    repo, folder = custom_code_repo
    with pytest.raises(OSError, match="not a valid JSON"):  # main holds a broken config
        load_vlm(repo, ModelLoading(trust_remote_code=True))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_vlm(repo, ModelLoading(revision="v2"))
    model, _ = load_vlm(repo, ModelLoading(revision="v2", trust_remote_code=True))
    assert type(model).__name__ == "TinyCustomLlava"
    expected = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).state_dict()
    assert all(torch.equal(expected[name], value) for name, value in model.state_dict().items())


def test_the_labeler_and_splitter_options_take_effect(tiny_vlm_dir, tmp_path, one_thread):
    splitter = build_tiny_causal_lm(tmp_path / "splitter", "llama")
    args = FeedbackConfig(
        labeler_model_name_or_path=str(tiny_vlm_dir("llava", seed=1)), labeler_load_in_8bit=True,
        labeler_attn_implementation="eager", splitter_model_name_or_path=str(splitter), splitter_load_in_4bit=True,
        splitter_dtype="bfloat16",
    )  # fmt: skip
    generator = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=args)
    labeler = generator.labeler_model
    assert isinstance(labeler.model.language_model.layers[0].self_attn.q_proj, Linear8bitLt)
    assert labeler.config._attn_implementation == "eager"
    runner = generator.claim_splitter.runner
    assert isinstance(runner.model.model.layers[0].self_attn.q_proj, Linear4bit)
    assert runner.model.model.layers[0].self_attn.q_proj.compute_dtype == torch.bfloat16
    model, _ = load_causal_lm(splitter, args.splitter_loading)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    bf16 = FeedbackConfig(labeler_model_name_or_path=str(tiny_vlm_dir("llava", seed=1)), labeler_dtype="bfloat16")
    assert next(RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=bf16).labeler_model.parameters()).dtype == (
        torch.bfloat16
    )


@pytest.mark.slow
def test_a_run_from_a_hub_revision_with_custom_code(custom_code_repo, tmp_path, one_thread):
    """Every load of the policy (sampling, reference log-probs, training, evaluation) honours revision and
    trust_remote_code: main is broken, and without trust_remote_code the custom classes cannot load."""
    from test_recipe import done, finish, recipe_args, run_recipe_process

    repo, _ = custom_code_repo
    argv = recipe_args(repo, tmp_path / "run", "--num_iterations", "1", "--model_revision", "v2")
    untrusted = run_recipe_process(
        argv, offline=False
    )  # a fresh process: this one has imported the custom classes already
    output, _ = untrusted.communicate(timeout=600)
    assert untrusted.returncode != 0 and "trust_remote_code=True" in output
    trusted = [*argv, "--trust_remote_code", "true", "--output_dir", str(tmp_path / "trusted")]
    finish(run_recipe_process(trusted, offline=False))
    state = done(tmp_path / "trusted")
    assert state["0"]["evaluate"] is not None and state["1"]["train"]["global_step"] > 0
    trained = AutoModelForImageTextToText.from_pretrained(
        tmp_path / "trusted" / "models" / "iteration-1", trust_remote_code=True
    )
    assert type(trained).__name__ == "TinyCustomLlava"
    reward = json.loads((tmp_path / "trusted" / "models" / "iteration-1" / "implicit_reward.json").read_text())
    assert (reward["reference_model"], reward["reference_revision"]) == (repo, "v2")


def test_a_qlora_run_with_an_8_bit_labeler(tiny_vlm_dir, tmp_path, one_thread):
    """4-bit policy with LoRA: the adapter trains and is merged into the base loaded unquantized in `dtype`."""
    from test_recipe import done, recipe_args, run_recipe

    # bitsandbytes' CPU 4-bit kernels need layers at least one quantization block (64) wide: the tiny preset's
    # vision tower (32) is narrower than any real model's
    preset = dataclasses.replace(PRESETS["tiny"], vision_hidden=64, vision_intermediate=128)
    base = build_tiny_vlm(tmp_path / "policy", "llava", preset)
    labeler = undecided_labeler(shutil.copytree(tiny_vlm_dir("llava", seed=1), tmp_path / "labeler"))
    argv = recipe_args(base, tmp_path / "run", "--num_iterations", "1", "--evaluation", "none")
    run_recipe(
        [*argv, "--load_in_4bit", "true", "--use_peft", "true", "--lora_target_modules", "q_proj", "v_proj",
         "--learning_rate", "1e-2", "--labeler_model_name_or_path", str(labeler), "--labeler_load_in_8bit", "true"]
    )  # fmt: skip
    assert done(tmp_path / "run")["1"]["train"]["global_step"] > 0
    merged = load_file(tmp_path / "run" / "models" / "iteration-1" / "model.safetensors")
    original = load_file(base / "model.safetensors")
    assert merged.keys() == original.keys()  # a plain model: no quantization state, no LoRA weights
    assert all(tensor.dtype == torch.float32 for tensor in merged.values())
    changed = [name for name in original if not torch.equal(original[name], merged[name])]
    assert changed and all("q_proj" in name or "v_proj" in name for name in changed)


def test_the_labeler_and_splitter_loading_fields_map_one_to_one():
    names = [field.name for field in dataclasses.fields(ModelLoading)]
    for role in ("labeler", "splitter"):
        prefixed = {name: f"{role}_{'model_revision' if name == 'revision' else name}" for name in names}
        declared = {field.name for field in dataclasses.fields(FeedbackConfig)}
        settable = {name: field for name, field in prefixed.items() if field in declared}
        assert set(settable) == set(names) - {"bnb_4bit_quant_type", "use_bnb_nested_quant", "bnb_4bit_quant_storage"}
        values = {"revision": "v3", "dtype": "float16", "attn_implementation": "eager", "trust_remote_code": True,
                  "load_in_4bit": False, "load_in_8bit": True}  # fmt: skip
        config = FeedbackConfig(**{settable[name]: value for name, value in values.items()})
        assert getattr(config, f"{role}_loading") == ModelLoading(**values)


def test_a_labeler_at_a_hub_revision(tiny_vlm_dir, hub, one_thread):
    repo = f"{hub.user}/labeler-with-branches"
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=tiny_vlm_dir("llava", seed=1))
    api.create_branch(repo, branch="v2", exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=tiny_vlm_dir("llava", seed=3), revision="v2")
    args = FeedbackConfig(labeler_model_name_or_path=repo, labeler_model_revision="v2")
    labeler = RLAIFVFeedbackGenerator(str(tiny_vlm_dir("llava")), args=args).labeler_model.state_dict()
    expected = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir("llava", seed=3)).state_dict()
    assert all(torch.equal(expected[name], value) for name, value in labeler.items())
