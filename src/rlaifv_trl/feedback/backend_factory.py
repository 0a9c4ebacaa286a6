"""One factory per job of the feedback: `make_sampler`, `make_splitter` and `make_labeler`, each on the backend the
`FeedbackConfig` names for it (transformers or vLLM), with the same settings whichever it is.

A job on vLLM gets its engine started per stage (`LazyEngine`). Under `accelerate launch` an engine of one GPU runs in
every process, on the process's GPU, for the process's own shards, as with transformers; an engine of
`vllm_tensor_parallel_size` = t GPUs runs in the first rank of each group of t ranks, over the group's GPUs, for the
group's shards (`rlaifv_trl.feedback.placement`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict

import torch
from accelerate import PartialState
from transformers import AutoTokenizer, GenerationConfig

from ..loading import ModelLoading, load_causal_lm, vllm_loading_check
from ..vllm_backend.vllm_engine import VLLMEngine, VLLMSettings
from ..vllm_backend.vllm_feedback import VLLMCandidateSampler, VLLMCausalLMRunner, VLLMYesNoLabeler
from .claims import ClaimSplitter, QuestionWriter
from .config import FeedbackConfig
from .labeler import YesNoLabeler
from .llm_claims import CausalLMRunner, LLMClaimSplitter, LLMQuestionWriter
from .placement import engine_group_size, free_cached_memory, processes_per_node
from .roles import VisionModel, require_model_name
from .rules import RuleBasedClaimSplitter, RuleBasedQuestionWriter
from .sampling import CandidateSampler


def process_state() -> PartialState:
    """Accelerate's process state: which process this is, for the shards it runs and the GPU its engines use.
    Processes launched on a machine without accelerator (e.g. `torchrun` on CPUs) are distributed too, over gloo:
    accelerate only treats them so when asked for CPU explicitly."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=launched and not torch.accelerator.is_available())


def make_sampler(
    args: FeedbackConfig, policy: VisionModel, state: PartialState
) -> CandidateSampler | VLLMCandidateSampler:
    """The candidate sampler of `args.sampling_backend`, sampling with `args.sampling`."""
    settings = asdict(args.sampling)
    if args.sampling_backend == "transformers":
        return CandidateSampler(policy.model, policy.processor, **settings)
    require_model_name(policy.given, "policy", "sampling_backend")
    vllm_loading_check(policy.loading)
    path, start = engine_starter(args, policy.given, policy.loading, state)
    generation_config = _generation_config(path, policy.loading) or GenerationConfig()  # `generate`'s defaults
    return VLLMCandidateSampler(start, policy.processor, generation_config, **settings)


def make_splitter(
    args: FeedbackConfig,
    state: PartialState,
    claim_splitter: ClaimSplitter | None = None,
    question_writer: QuestionWriter | None = None,
) -> tuple[ClaimSplitter, QuestionWriter]:
    """The claim splitter and question writer: those given, else the language models the config names (one runner
    per model, on `args.splitter_backend`), else the rules."""
    runners: dict[str, CausalLMRunner | VLLMCausalLMRunner] = {}

    def runner(name: str) -> CausalLMRunner | VLLMCausalLMRunner:
        if name not in runners:
            runners[name] = _language_model(args, name, state)
        return runners[name]

    if claim_splitter is None:
        name = args.splitter_model_name_or_path
        words = args.splitter_max_input_words
        claim_splitter = LLMClaimSplitter(runner(name), words) if name else RuleBasedClaimSplitter(words)
    if question_writer is None:
        name = args.question_writer_model_name_or_path or args.splitter_model_name_or_path
        question_writer = LLMQuestionWriter(runner(name)) if name else RuleBasedQuestionWriter()
    return claim_splitter, question_writer


def make_labeler(args: FeedbackConfig, labeler: VisionModel, state: PartialState) -> YesNoLabeler | VLLMYesNoLabeler:
    """The yes/no labeler of `args.labeler_backend`."""
    if args.labeler_backend == "transformers":
        return YesNoLabeler(labeler.model, labeler.processor, batch_size=args.labeler_batch_size)
    require_model_name(labeler.given, "labeler", "labeler_backend")
    vllm_loading_check(labeler.loading, "labeler_")
    _, start = engine_starter(args, labeler.given, labeler.loading, state)
    return VLLMYesNoLabeler(start, labeler.processor, batch_size=args.labeler_batch_size)


def _language_model(args: FeedbackConfig, name: str, state: PartialState) -> CausalLMRunner | VLLMCausalLMRunner:
    """The splitter's or question writer's language model `name` on `args.splitter_backend`."""
    loading, settings = args.splitter_loading, asdict(args.splitter_sampling)
    if args.splitter_backend == "transformers":
        model, tokenizer = load_causal_lm(name, loading)
        return CausalLMRunner(model, tokenizer, **settings)
    path, start = engine_starter(args, name, loading, state)
    tokenizer = AutoTokenizer.from_pretrained(path, **loading.processor_kwargs())
    generation_config = _generation_config(path, loading)
    return VLLMCausalLMRunner(start, tokenizer, model_id=str(path), generation_config=generation_config, **settings)


def _generation_config(path: str, loading: ModelLoading) -> GenerationConfig | None:
    """The model's generation config; `None` without a generation_config.json."""
    try:
        return GenerationConfig.from_pretrained(path, **loading.processor_kwargs())
    except OSError:
        return None


def engine_starter(
    args: FeedbackConfig, name: str | os.PathLike, loading: ModelLoading, state: PartialState
) -> tuple[str, Callable[[], VLLMEngine]]:
    """Where the model is (a Hub snapshot at its revision, or the folder) and how to start its engine."""
    if state.num_processes > 1 and args.vllm_data_parallel_size > 1:
        raise ValueError(
            "With several processes the processes are the data parallelism: vllm_data_parallel_size must be 1 (an "
            "engine spanning several GPUs takes vllm_tensor_parallel_size)"
        )
    group_size = engine_group_size(args.vllm_tensor_parallel_size, state.num_processes, processes_per_node(state))
    path = loading.locate(name)
    settings = VLLMSettings(
        python=args.vllm_python,
        gpu_memory_utilization=args.vllm_gpu_memory_utilization,
        tensor_parallel_size=args.vllm_tensor_parallel_size,
        data_parallel_size=args.vllm_data_parallel_size,
        max_model_len=args.vllm_max_model_len,
        dtype=loading.dtype or "auto",
        enable_prefix_caching=args.vllm_enable_prefix_caching,
        engine_kwargs=dict(args.vllm_engine_kwargs or {}),
    )
    env = _device_env(state, group_size)

    def start() -> VLLMEngine:
        free_cached_memory()  # what this process's own models cached counts as taken when vLLM measures free memory
        return VLLMEngine(
            path, settings, revision=loading.revision, trust_remote_code=loading.trust_remote_code, env=env
        )

    return path, start


def _device_env(state: PartialState, group_size: int) -> dict[str, str]:
    """The GPUs of an engine started by one of several processes: those of the `group_size` processes from this one
    on (its own GPU when 1)."""
    if state.num_processes == 1 or not torch.cuda.is_available():
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    first = state.local_process_index
    return {"CUDA_VISIBLE_DEVICES": ",".join(devices[(first + k) % len(devices)] for k in range(group_size))}
