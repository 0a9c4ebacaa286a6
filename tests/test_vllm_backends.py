"""The vllm backends, run for real on vLLM's CPU build (`scripts/make_vllm_env.sh`; `make test` builds it once).

vLLM runs in its own environment (its own torch and transformers); the project drives it through
`rlaifv_trl.vllm_backend.vllm_worker`. The stand-ins are tiny LLaVA and Llama 3 models with 32-dimensional attention heads
(vLLM's CPU attention takes no smaller), saved by the project's transformers: the LLaVA's vision-tower weights are
renamed for vLLM's loader by `rlaifv_trl.vllm_backend.vllm_checkpoint` (transformers loads both layouts). Each engine takes
30-60 s to start, so one engine per model serves the module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import COLORS, ShapesWorld, TinyVLMPreset, build_tiny_vlm
from rlaifv_testbed.models import build_tiny_causal_lm
from rlaifv_trl.feedback import FeedbackConfig, LabelGroup, YesNoLabeler
from rlaifv_trl.feedback.labeler import render_question
from rlaifv_trl.feedback.llm_claims import LLMClaimSplitter, LLMQuestionWriter, parse_claims
from rlaifv_trl.feedback.sampling import CandidateSampler
from rlaifv_trl.manifest import result_settings
from rlaifv_trl.vllm_backend.vllm_checkpoint import needs_conversion, vllm_loadable
from rlaifv_trl.vllm_backend.vllm_engine import VLLMEngine, VLLMEngineError, VLLMSettings
from rlaifv_trl.vllm_backend.vllm_feedback import VLLMCandidateSampler, VLLMCausalLMRunner, VLLMYesNoLabeler
from support.stand_ins import undecided_labeler


ROOT = Path(__file__).parents[1]
# The smallest sizes vLLM's CPU attention runs: 32-dimensional heads in the language model and the vision tower.
VLLM_PRESET = TinyVLMPreset(
    text_hidden=64, text_layers=2, text_heads=2, text_kv_heads=2, text_intermediate=128,
    vision_hidden=64, vision_layers=2, vision_heads=2, vision_intermediate=128, image_size=32,
)  # fmt: skip


pytestmark = pytest.mark.slow  # an end-to-end run: `pytest -m "not slow"` leaves it out


@pytest.fixture(scope="module")
def vllm_python(tmp_path_factory) -> str:
    python = os.environ.get("RLAIFV_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    if not os.access(python, os.X_OK):
        pytest.fail(f"No Python with vLLM at {python}: run scripts/make_vllm_env.sh (make test does)")
    return python


@pytest.fixture(scope="module", autouse=True)
def _worker_environment():
    """Engines on 2 threads with a 1 GiB KV cache, offline (set for the workers only: the Hub client of this process
    read its settings at import)."""
    saved = {key: os.environ.get(key) for key in ("VLLM_CPU_KVCACHE_SPACE", "HF_HUB_OFFLINE")}
    os.environ.update(VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def settings(vllm_python: str, **overrides) -> VLLMSettings:
    return VLLMSettings(
        python=vllm_python, dtype="float32", max_model_len=512, engine_kwargs={"enforce_eager": True}, **overrides
    )


@pytest.fixture(scope="module")
def llava(tmp_path_factory) -> Path:
    folder = build_tiny_vlm(tmp_path_factory.mktemp("llava-vllm"), "llava", VLLM_PRESET, seed=0)
    return undecided_labeler(folder)


@pytest.fixture(scope="module")
def llava_engine(llava, vllm_python):
    with VLLMEngine(llava, settings(vllm_python)) as engine:
        yield engine


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("llama-vllm"), "llama", seed=1, preset=VLLM_PRESET)


def images(count: int, seed: int = 0):
    world = ShapesWorld()
    return [world.scene(seed + i).render() for i in range(count)]


def test_saved_llava_is_renamed_for_vllm_and_transformers_loads_the_copy(llava, tmp_path):
    assert needs_conversion(llava)
    converted = Path(vllm_loadable(llava, tmp_path))
    assert not needs_conversion(converted)
    with safe_open(str(converted / "model.safetensors"), "pt") as weights:
        assert any(key.startswith("vision_tower.vision_model.") for key in weights.keys())
    assert vllm_loadable(llava, tmp_path) == str(converted)  # reused
    original = AutoModelForImageTextToText.from_pretrained(llava).state_dict()
    copy = AutoModelForImageTextToText.from_pretrained(converted).state_dict()
    assert original.keys() == copy.keys()
    assert all(torch.equal(original[name], copy[name]) for name in original)


def test_vllm_labeler_equals_the_transformers_labeler(llava, llava_engine):
    processor = AutoProcessor.from_pretrained(llava)
    model = AutoModelForImageTextToText.from_pretrained(llava).eval()
    reference = YesNoLabeler(model, processor)
    labeler = VLLMYesNoLabeler(lambda: llava_engine, processor, batch_size=2)  # 3 distinct questions: 2 calls
    differences, verdicts, distinct = [], [], set()
    for image in images(3):
        questions = [
            f"Is there a {color} {shape} in the image? Please answer yes or no."
            for color, shape in [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("red", "circle")]
        ]
        group = LabelGroup([image], questions)
        expected, got = reference.label_group(group), labeler.label_group(group)
        for a, b in zip(expected, got):
            # relative differences: a random model's p(yes) and p(no) are small, so 1e-3 absolute says little
            differences += [abs(a.p_yes - b.p_yes) / a.p_yes, abs(a.p_no - b.p_no) / a.p_no]
            verdicts.append((a.accepted, b.accepted))
            distinct.add(round(a.p_yes / a.p_no, 6))
    assert max(differences) < 1e-3
    assert all(a == b for a, b in verdicts)
    assert len(distinct) > 3  # the labels depend on the image and the question
    # The labeler reads its yes/no tokens by id: its engine is not allowed to send the whole vocabulary.
    text = render_question(processor, 1, questions[0])
    with pytest.raises(RuntimeError, match="greater than max allowed: 20"):
        llava_engine.next_token_probabilities([text], [[image]], labeler.token_ids, logprobs=-1)


def test_yes_no_tokens_by_id_equal_the_whole_vocabulary_and_outlive_the_top_k(llava, vllm_python):
    """The log-probabilities read by id are those of the full softmax: the same as the whole vocabulary's, where the
    top 2 holds no yes/no token at all (it would report 0)."""
    processor = AutoProcessor.from_pretrained(llava)
    labeler = VLLMYesNoLabeler(lambda: None, processor)
    scenes = images(2, seed=5)
    texts = [render_question(processor, 1, f"Is there a {color} circle? Please answer yes or no.") for color in COLORS]
    own = [[scenes[i % 2]] for i in range(len(texts))]
    whole_vocabulary = settings(vllm_python)
    whole_vocabulary.engine_kwargs["max_logprobs"] = -1
    with VLLMEngine(llava, whole_vocabulary) as engine:
        by_id = engine.next_token_probabilities(texts, own, labeler.token_ids)
        whole = engine.next_token_probabilities(texts, own, labeler.token_ids, logprobs=-1)
        top_2 = engine.next_token_probabilities(texts, own, labeler.token_ids, logprobs=2)
    assert by_id == whole  # the same floats, gathered from the same log-softmax
    assert all(0 < p < 1 for row in by_id for p in row)
    assert [0.0, 0.0] in top_2  # a question whose yes/no tokens are all outside the top 2


def test_vllm_sampler_gives_n_distinct_answers_reproducible_per_seed(llava, llava_engine):
    processor = AutoProcessor.from_pretrained(llava)
    model = AutoModelForImageTextToText.from_pretrained(llava)
    sampler = VLLMCandidateSampler(
        lambda: llava_engine, processor, model.generation_config, num_candidates=4, temperature=1.0, max_new_tokens=12
    )
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    scenes = [[image] for image in images(3)]
    batch = sampler.sample_batch([prompt] * 3, scenes, [11, 12, 13])
    assert [len(answers) for answers in batch] == [4, 4, 4]
    assert all(len(set(answers)) == 4 for answers in batch)  # n distinct answers per prompt
    assert sampler.sample(prompt, scenes[1], 12) == batch[1]  # same seed, same candidates, alone or batched
    assert sampler.sample(prompt, scenes[1], 99) != batch[1]
    with pytest.raises(ValueError, match="no equivalent in vLLM"):
        VLLMCandidateSampler(lambda: llava_engine, processor, model.generation_config, generation_kwargs={"a": 1})
    # The same settings through transformers sample from the same distribution: answers have similar lengths.
    reference = CandidateSampler(model, processor, num_candidates=4, temperature=1.0, max_new_tokens=12)
    assert len(reference.sample(prompt, scenes[1], 12)) == 4


def test_vllm_splitter_runs_a_language_model(llama, vllm_python):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama)
    with VLLMEngine(llama, settings(vllm_python)) as engine:
        runner = VLLMCausalLMRunner(lambda: engine, tokenizer, str(llama), max_new_tokens=16, batch_size=2)
        splitter = LLMClaimSplitter(runner)
        instructions = splitter.instructions(["Describe."] * 3, ["A red circle.", "A blue square.", "Nothing."])
        first = runner.complete(instructions, seed=5)
        assert runner.complete(instructions, seed=5) == first  # reproducible from the seed
        whole = VLLMCausalLMRunner(lambda: engine, tokenizer, str(llama), max_new_tokens=16, batch_size=3)
        assert whole.complete(instructions, seed=5) == first  # whatever the engine calls the requests are split in
        assert runner.complete(instructions, seed=6) != first
        assert len(first) == 3 and all(isinstance(text, str) and text for text in first)
        claims = splitter.split(["Describe."] * 3, ["A red circle.", "A blue square.", ""], seed=5)
        assert claims[2] == [] and claims[:2] == [parse_claims(text) for text in first[:2]]
        assert runner.render(instructions[0]).startswith("<|begin_of_text|>")  # the chat template's own BOS
        # Several groups' requests in shared engine calls (the divide stage sends a shard's records together): each
        # group gets what its own call gives it.
        groups = [(instructions[:2], 5), ([], 9), (instructions[2:], 7)]
        assert whole.complete_groups(groups) == [runner.complete(texts, seed) for texts, seed in groups]
        split = [(["Describe."] * 2, ["A red circle.", ""], 5), (["Describe."], ["A blue square and a dog."], 7)]
        assert splitter.split_groups(split) == [splitter.split(*group) for group in split]
        writer = LLMQuestionWriter(whole)
        claims = [(["There is a red circle."], 3), ([], 4), (["A dog sits.", "The square is blue."], 4)]
        assert writer.write_groups(claims) == [writer.write(*group) for group in claims]


def test_a_dead_worker_is_a_clear_error(llama, vllm_python, tmp_path):
    with pytest.raises(VLLMEngineError, match="could not start"):
        VLLMEngine(tmp_path / "missing", settings(vllm_python))


def test_options_vllm_cannot_honour_are_refused():
    with pytest.raises(ValueError, match="bitsandbytes"):
        FeedbackConfig(labeler_backend="vllm", labeler_load_in_4bit=True)
    with pytest.raises(ValueError, match="attention kernels"):
        FeedbackConfig(labeler_backend="vllm", labeler_attn_implementation="sdpa")
    with pytest.raises(ValueError, match="needs a language model"):
        FeedbackConfig(splitter_backend="vllm")
    with pytest.raises(ValueError, match="labeler_backend must be one of"):
        FeedbackConfig(labeler_backend="onnx")
    with pytest.raises(ValueError, match="vllm_gpu_memory_utilization must be in"):
        FeedbackConfig(vllm_gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="vllm_tensor_parallel_size must be at least 1"):
        FeedbackConfig(vllm_tensor_parallel_size=0)


def test_labeler_top_logprobs_is_deprecated_and_decides_nothing():
    assert FeedbackConfig().labeler_top_logprobs is None
    with pytest.warns(FutureWarning, match="labeler_top_logprobs is deprecated and ignored"):
        config = FeedbackConfig(labeler_backend="vllm", labeler_top_logprobs=-1)
    assert "labeler_top_logprobs" not in result_settings(config)  # a run recorded with it resumes without it


def test_one_recipe_iteration_with_every_backend_on_vllm(llava, llama, vllm_python, tmp_path, one_thread):
    from test_recipe import done, run_recipe

    run = tmp_path / "run"
    before = set(worker_processes())  # engines of other tests of this module
    run_recipe(
        [
            "--config", str(ROOT / "recipes" / "configs" / "tiny_cpu.yaml"), "--output_dir", str(run),
            "--model_name_or_path", str(llava), "--labeler_model_name_or_path", str(llava),
            "--splitter_model_name_or_path", str(llama), "--splitter_max_new_tokens", "24",
            "--sampling_backend", "vllm", "--splitter_backend", "vllm", "--labeler_backend", "vllm",
            "--vllm_python", vllm_python, "--vllm_max_model_len", "512",
            "--vllm_engine_kwargs", json.dumps({"enforce_eager": True}),
            "--num_iterations", "1", "--prompts_per_iteration", "8", "--num_candidates", "4",
            "--max_new_tokens", "12", "--evaluation_prompts", "8", "--num_train_epochs", "1", "--use_cpu", "true",
        ]
    )  # fmt: skip
    stages = done(run)
    assert {"feedback", "train", "evaluate"} <= set(stages["1"])
    report = json.loads((run / "feedback" / "iteration-1" / "report.json").read_text())
    assert report["num_candidates"] == 4 * report["num_prompts"] == 32
    assert report["num_claims"] > 0 and report["num_labeler_full_forwards"] == 0
    feedback = json.loads((run / "manifest.json").read_text())["sections"]["iteration-1/feedback"]["settings"]
    assert feedback["sampling_backend"] == feedback["labeler_backend"] == "vllm"
    assert AutoModelForImageTextToText.from_pretrained(run / "models" / "iteration-1") is not None
    assert set(worker_processes()) <= before  # every engine stopped with its stage: none holds memory in training


def worker_processes() -> list[int]:
    """Processes running the vLLM worker script."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"vllm_worker.py" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
