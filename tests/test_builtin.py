"""The built-in models of the embedded default: shipped weights that rebuild into working checkpoints."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import evaluate_hallucination, labeling_accuracy
from rlaifv_testbed.builtin import BUILTIN_LABELER, BUILTIN_POLICY, builtin_weights_path, materialize_builtin
from rlaifv_trl.loading import is_registered_model_name, resolve_model_name


@pytest.fixture(scope="module")
def builtin_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("builtin")
    return {name: materialize_builtin(name, root / name.split(":")[1]) for name in (BUILTIN_POLICY, BUILTIN_LABELER)}


def load(folder):
    return AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


@pytest.mark.parametrize("name", [BUILTIN_POLICY, BUILTIN_LABELER])
def test_materialized_checkpoints_hold_exactly_the_shipped_weights(builtin_dirs, name):
    model, _ = load(builtin_dirs[name])
    shipped = load_file(builtin_weights_path(name))
    state = model.state_dict()
    assert shipped.keys() == state.keys()
    assert all(torch.equal(state[key], value) for key, value in shipped.items())


def test_the_builtin_policy_describes_held_out_scenes_and_hallucinates_when_sampling(builtin_dirs, one_thread):
    model, processor = load(builtin_dirs[BUILTIN_POLICY])
    greedy = evaluate_hallucination(model, processor, num_scenes=100, temperature=None, max_new_tokens=48)
    sampled = evaluate_hallucination(model, processor, num_scenes=100, temperature=1.0, max_new_tokens=48)
    assert greedy.recall > 0.85 and greedy.response_rate < 0.3
    assert sampled.response_rate > greedy.response_rate + 0.1  # room for RLAIF-V to improve


@pytest.mark.parametrize("name", [BUILTIN_POLICY, BUILTIN_LABELER])
def test_the_builtin_models_answer_existence_questions(builtin_dirs, name, one_thread):
    model, processor = load(builtin_dirs[name])
    assert labeling_accuracy(model, processor, num_scenes=150) > 0.8  # chance is 0.5


def test_builtin_names(tmp_path):
    assert (
        is_registered_model_name(BUILTIN_POLICY)
        and not is_registered_model_name("llava-hf/llava-1.5-7b-hf")
        and not is_registered_model_name(None)
    )
    with pytest.raises(ValueError, match="builtin:shapesworld-llava"):
        materialize_builtin("builtin:nope", tmp_path)


def test_builtin_names_resolve_to_one_cached_folder(builtin_dirs):
    folder = resolve_model_name(BUILTIN_POLICY)
    assert folder == resolve_model_name(BUILTIN_POLICY)  # saved once, then reused
    cached = load_file(f"{folder}/model.safetensors")
    materialized = load_file(builtin_dirs[BUILTIN_POLICY] / "model.safetensors")
    assert cached.keys() == materialized.keys() and all(torch.equal(cached[k], materialized[k]) for k in cached)
