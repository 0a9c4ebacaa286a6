"""The vLLM side of the feedback generator: engines for the policy, the splitter and the labeler, started per stage.

A role on the vllm backend is given by name or folder; the generator then loads only its processor or tokenizer
(chat template, prompt checks), never its weights in transformers. Under `accelerate launch` each process starts
its own engines on its own GPU and samples, splits and labels its own shards, as with transformers.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoProcessor, AutoTokenizer, GenerationConfig, ProcessorMixin

from ..backends.vllm_engine import VLLMEngine, VLLMSettings
from ..backends.vllm_feedback import VLLMCandidateSampler, VLLMCausalLMRunner, VLLMYesNoLabeler
from ..compatibility import check_vision_language_model
from ..loading import ModelLoading, vllm_loading_check
from .config import FeedbackConfig


def _device_env(state: PartialState) -> dict[str, str]:
    """The GPU of this process, for an engine started by one of several processes."""
    if state.num_processes == 1 or not torch.cuda.is_available():
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    return {"CUDA_VISIBLE_DEVICES": devices[state.local_process_index % len(devices)]}


def engine_starter(
    args: FeedbackConfig, name: str | os.PathLike, loading: ModelLoading, state: PartialState
) -> tuple[str, Callable[[], VLLMEngine]]:
    """Where the model is (a Hub snapshot at its revision, or the folder) and how to start its engine."""
    if state.num_processes > 1 and (args.vllm_tensor_parallel_size > 1 or args.vllm_data_parallel_size > 1):
        raise ValueError(
            "With several processes each runs its own vLLM engine on its own GPU: vllm_tensor_parallel_size and "
            "vllm_data_parallel_size must be 1 (for a labeler spanning GPUs, run the feedback as one process)"
        )
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
    env = _device_env(state)

    def start() -> VLLMEngine:
        return VLLMEngine(
            path, settings, revision=loading.revision, trust_remote_code=loading.trust_remote_code, env=env
        )

    return path, start


def vlm_processor(name: str | os.PathLike, loading: ModelLoading, role: str) -> tuple[str, ProcessorMixin]:
    """The processor of a vision-language model served by vLLM, checked like a loaded model, and its location."""
    path = loading.locate(name)
    processor = AutoProcessor.from_pretrained(path, **loading.processor_kwargs())
    check_vision_language_model(AutoConfig.from_pretrained(path, **loading.processor_kwargs()), processor, role)
    return path, processor


def require_model_name(model, role: str, backend: str) -> None:
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(
            f"{backend}='vllm' serves the {role} with vLLM, which loads it itself: pass its name or folder, not a "
            "model object"
        )


def vllm_sampler(
    args: FeedbackConfig,
    model: str | os.PathLike,
    loading: ModelLoading,
    processor: ProcessorMixin,
    state: PartialState,
) -> VLLMCandidateSampler:
    require_model_name(model, "policy", "sampling_backend")
    vllm_loading_check(loading)
    path, start = engine_starter(args, model, loading, state)
    try:
        generation_config = GenerationConfig.from_pretrained(path, **loading.processor_kwargs())
    except OSError:  # no generation_config.json: the library's defaults, as `generate` uses them
        generation_config = GenerationConfig()
    return VLLMCandidateSampler(
        start,
        processor,
        generation_config,
        num_candidates=args.num_candidates,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        top_p=args.top_p,
        top_k=args.top_k,
        generation_kwargs=args.generation_kwargs,
    )


def vllm_labeler(
    args: FeedbackConfig,
    model: str | os.PathLike,
    loading: ModelLoading,
    processor: ProcessorMixin,
    state: PartialState,
) -> VLLMYesNoLabeler:
    require_model_name(model, "labeler", "labeler_backend")
    vllm_loading_check(loading, "labeler_")
    _, start = engine_starter(args, model, loading, state)
    return VLLMYesNoLabeler(
        start, processor, top_logprobs=args.labeler_top_logprobs, batch_size=args.labeler_batch_size
    )


def vllm_runner(args: FeedbackConfig, name: str, state: PartialState) -> VLLMCausalLMRunner:
    loading = args.splitter_loading
    path, start = engine_starter(args, name, loading, state)
    tokenizer = AutoTokenizer.from_pretrained(path, **loading.processor_kwargs())
    try:
        generation_config = GenerationConfig.from_pretrained(path, **loading.processor_kwargs())
    except OSError:
        generation_config = None
    return VLLMCausalLMRunner(
        start,
        tokenizer,
        model_id=str(path),
        temperature=args.splitter_temperature,
        top_p=args.splitter_top_p,
        max_new_tokens=args.splitter_max_new_tokens,
        generation_config=generation_config,
        batch_size=args.splitter_batch_size,
    )
