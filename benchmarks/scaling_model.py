"""A time model of four RLAIF-V iterations of LLaVA-1.5-7B on one node of 8 A100-80GB GPUs.

Every input is a named `Input`, measured (where, on what, with the command that reproduces it) or assumed (with its
source); the stages are arithmetic on them: FLOPs from the architectures (a forward pass costs 2 x weights x tokens
plus attention), decoding from the bytes each step reads from HBM, and the way the feedback pipeline calls its vLLM
engines (per `sampling_batch_size` prompts, per shard, per prompt: each call waits for its slowest request).

    python benchmarks/scaling_model.py                  # the stage tables and the sensitivity table, in markdown
    python benchmarks/scaling_model.py --json model.json
    python benchmarks/scaling_model.py --inputs         # every input with its provenance
    python benchmarks/scaling_model.py --count-answers answers.jsonl   # words and claims of answers

`docs/scaling.md` is this script's output with its reading.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path


# ---------------------------------------------------------------------------------------------------------------------
# Architectures


@dataclass(frozen=True)
class Decoder:
    """A Llama-architecture language model (untied input embeddings and LM head)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_dim
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        return 2 * self.vocab * self.hidden + self.layers * self.layer_params + self.hidden

    @property
    def matmul_params(self) -> int:
        """Weights multiplied once per token in the layers (embeddings are a lookup, the LM head is counted apart)."""
        per_layer = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_dim + 3 * self.hidden * self.intermediate
        return self.layers * per_layer

    def forward_flops(self, tokens: float, past: float = 0.0, head: bool = True) -> float:
        """FLOPs of one forward pass over `tokens` new tokens after `past` cached ones: 2 x weights per token, plus
        causal attention (QK^T and AV: 4 x hidden FLOPs per layer per earlier position)."""
        weights = 2 * tokens * (self.matmul_params + (self.head_params if head else 0))
        positions = tokens * past + tokens * (tokens + 1) / 2
        return weights + 4 * self.layers * self.hidden * positions

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.layers * self.kv_dim * dtype_bytes

    def weight_bytes(self, dtype_bytes: int = 2) -> int:
        return self.params * dtype_bytes


@dataclass(frozen=True)
class VisionTower:
    """A CLIP ViT: patches plus a class token, bidirectional attention."""

    layers: int
    hidden: int
    intermediate: int
    image_size: int
    patch_size: int

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    @property
    def params(self) -> int:
        patch = 3 * self.patch_size**2 * self.hidden
        embeddings = patch + self.hidden + self.tokens * self.hidden + 2 * self.hidden  # class, positions, pre-norm
        layer = 4 * (self.hidden**2 + self.hidden) + 2 * self.hidden * self.intermediate
        layer += self.intermediate + self.hidden + 4 * self.hidden
        return embeddings + self.layers * layer + 2 * self.hidden

    def forward_flops(self, tiles: float = 1.0) -> float:
        """FLOPs of encoding `tiles` crops of `image_size` pixels."""
        per_layer = 4 * self.hidden**2 + 2 * self.hidden * self.intermediate
        weights = 2 * self.tokens * (3 * self.patch_size**2 * self.hidden + self.layers * per_layer)
        return tiles * (weights + 4 * self.layers * self.hidden * self.tokens**2)


@dataclass(frozen=True)
class VisionLanguageModel:
    """A LLaVA-family model: vision tower, two-layer MLP projector, language model."""

    vision: VisionTower
    language: Decoder
    image_newline: bool = False  # LLaVA-NeXT's learned row separator

    @property
    def projector_params(self) -> int:
        h, v = self.language.hidden, self.vision.hidden
        return v * h + h + h * h + h

    @property
    def params(self) -> int:
        newline = self.language.hidden if self.image_newline else 0
        return self.vision.params + self.projector_params + self.language.params + newline

    def image_flops(self, tiles: float, image_tokens: float) -> float:
        """Vision tower over the tiles plus the projector over the image tokens."""
        projector = 2 * image_tokens * (self.vision.hidden * self.language.hidden + self.language.hidden**2)
        return self.vision.forward_flops(tiles) + projector


CLIP_L_336 = VisionTower(layers=24, hidden=1024, intermediate=4096, image_size=336, patch_size=14)
LLAVA_15_7B = VisionLanguageModel(CLIP_L_336, Decoder(32, 4096, 11008, 32, 32, 32064))
LLAVA_NEXT_34B = VisionLanguageModel(CLIP_L_336, Decoder(60, 7168, 20480, 56, 8, 64064), image_newline=True)
LLAMA_3_8B = Decoder(32, 4096, 14336, 32, 8, 128256)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Input:
    value: float
    kind: str  # "measured" or "assumed"
    source: str


# llava-v1.5-7b.jsonl: LLaVA's evaluation outputs on LLaVA-Bench-in-the-Wild, as committed in the LLaVA repository's
# fork network (github.com/haotian-liu/LLaVA, commit 32cebc3, playground/data/eval/llava-bench-in-the-wild/answers/).
LLAVA_BENCH = "LLaVA-1.5-7B's 60 answers on LLaVA-Bench-in-the-Wild (llava-v1.5-7b.jsonl)"
INPUTS: dict[str, Input] = {
    # work
    "prompts": Input(4000, "assumed", "the paper: ~4k instructions per iteration"),
    "candidates": Input(10, "assumed", "the paper: n = 10"),
    "iterations": Input(4, "assumed", "the paper: 4 iterations"),
    "pairs": Input(8000, "assumed", "pairs_per_prompt 2 x 4,000 prompts: the most the config keeps (an upper bound)"),
    "epochs": Input(4, "assumed", "the paper: 4 epochs per iteration (llava15_7b.yaml)"),
    "answer_words": Input(92.7, "measured", LLAVA_BENCH + ": mean words; `--count-answers`"),
    "answer_tokens": Input(
        138.5, "measured", LLAVA_BENCH + ": mean LLaMA-2 tokens (LLaVA-1.5's tokenizer; npm llama-tokenizer-js 1.2.2)"
    ),
    "answer_tokens_llama3": Input(
        116.4, "measured", LLAVA_BENCH + ": mean Llama-3 tokens (npm llama3-tokenizer-js 1.2.0)"
    ),
    "longest_of_call": Input(1.5, "assumed", "a call's longest output / the mean output (it waits for its slowest)"),
    "question_tokens": Input(14.8, "measured", "LLaVA-Bench-in-the-Wild's 60 prompts, LLaMA-2 tokens"),
    "policy_template_tokens": Input(10, "assumed", "llava-hf template `USER: <image>\\n... ASSISTANT:` and BOS"),
    "claims_per_answer": Input(
        10,
        "assumed",
        "range 8-12; bounds measured on " + LLAVA_BENCH + ": 4.4 (rule-based splitter, whole "
        "sentences, opinions dropped) and 14.4 (one claim per clause); `--count-answers`",
    ),
    "split_instruction_tokens": Input(
        96, "measured", "SPLIT_INSTRUCTION without its fields, Llama-3 tokens (88 before the question)"
    ),
    "split_shared_tokens": Input(
        80,
        "assumed",
        "Llama-3 chat header (5) + the 88 instruction tokens before the "
        "question, in whole 16-token blocks of vLLM's prefix cache",
    ),
    "question_instruction_tokens": Input(51, "measured", "QUESTION_INSTRUCTION without the claim, Llama-3 tokens"),
    "question_shared_tokens": Input(48, "assumed", "chat header + the 48 tokens before the claim, whole blocks"),
    "chat_template_tokens": Input(10, "assumed", "Llama-3 chat template around one user turn"),
    "labeler_image_tokens": Input(
        2340,
        "measured",
        "transformers' LlavaNextProcessor with llava-v1.6-34b's grid pinpoints on a 640x480 (COCO) "
        "image: 5 tiles of 577 vision tokens; 2,144 at 640x427, 2,928 at 800x800",
    ),
    "labeler_tiles": Input(5, "measured", "same: a base view and 4 crops of 336 px"),
    "labeler_prefix_passes": Input(
        1,
        "assumed",
        "times a prompt's image prefix is computed for its ~100 questions: "
        "once, by vLLM's prefix cache (docs/feedback.md); the reference implementation: "
        "once per question",
    ),
    "sampling_prefix_passes": Input(
        1,
        "assumed",
        "times a prompt's image and question are computed for its 10 candidates: once, by vLLM's prefix cache",
    ),
    "labeler_prefix_text_tokens": Input(20, "assumed", "ChatML system turn and user header around the image"),
    "labeler_question_extra_tokens": Input(
        24,
        "assumed",
        "question form (+4) + ' Please answer yes or no.' (6, measured with Llama-3's tokenizer) + "
        "ChatML closing and assistant header (6) + the prefix's last partial 16-token block recomputed (8)",
    ),
    # hardware: NVIDIA A100-SXM4-80GB
    "gpus": Input(8, "assumed", "one node of 8 A100-80GB (the paper)"),
    "peak_flops": Input(312e12, "assumed", "NVIDIA A100 datasheet: bf16 dense tensor-core peak"),
    "hbm_bytes_per_s": Input(2.039e12, "assumed", "NVIDIA A100 80GB SXM datasheet: HBM2e bandwidth"),
    "hbm_efficiency": Input(
        0.77,
        "assumed",
        "public: vLLM 0.23 decoding Llama-3.1-8B at batch 1 on an A100 reached "
        "77% of the HBM roofline (johnmusgrave.com, vLLM throughput-latency sweep on A100)",
    ),
    "allreduce_bytes_per_s": Input(
        230e9, "assumed", "NCCL all-reduce bus bandwidth over NVLink3/NVSwitch (nccl-tests on DGX A100)"
    ),
    "allreduce_latency_s": Input(10e-6, "assumed", "one small all-reduce of a decode step (vLLM's custom all-reduce)"),
    "step_overhead_s": Input(1e-3, "assumed", "vLLM scheduling and sampling per decode step"),
    "call_overhead_s": Input(0.02, "assumed", "one engine call: JSON over the worker's pipe, scheduling, results"),
    "frontend_s_per_request": Input(
        0.81e-3,
        "measured",
        "benchmarks/vllm_labeler.py: vLLM's front-end CPU per labeler question (CPU build, "
        "2 cores of an AMD EPYC, 65,536-token vocabulary; docs/feedback.md); taken for every request",
    ),
    "max_num_seqs": Input(256, "assumed", "vLLM's default concurrent sequences per engine"),
    # utilisation
    "mfu_train": Input(
        0.30,
        "assumed",
        "HF Trainer + DeepSpeed ZeRO-2, micro-batch of one pair (~1.5k tokens); "
        "the paper's 6 h implies ~0.2 counted the same way",
    ),
    "mfu_prefill": Input(0.45, "assumed", "vLLM chunked prefill, large GEMMs; also the compute ceiling of decoding"),
    "mfu_reference": Input(0.30, "assumed", "forward passes of the precompute, as training"),
    # starts, disks, network
    "engine_fixed_s_tp1": Input(
        34,
        "measured",
        "vLLM engine start, tensor parallel 1, CPU build, tiny model "
        "(tests/test_vllm_tensor_parallel.py; docs/feedback.md): a lower bound on GPUs",
    ),
    "engine_fixed_s_tp": Input(45, "measured", "same, tensor parallel 2; taken for every size above 1"),
    "engine_compile_s": Input(
        60, "assumed", "torch.compile and CUDA graph capture per start (cached after the first)"
    ),
    "disk_read_bytes_per_s": Input(2e9, "assumed", "local NVMe or page cache, weights read once per start"),
    "disk_write_bytes_per_s": Input(2e9, "assumed", "local NVMe, checkpoints"),
    "training_start_s": Input(60, "assumed", "policy load on 8 processes and DeepSpeed initialisation"),
    "upload_bytes_per_s": Input(100e6, "assumed", "1 Gbit/s to the Hub"),
    "image_bytes": Input(160e3, "assumed", "a COCO JPEG (640x480) in the pushed dataset"),
    "checkpoint_bytes_per_param": Input(
        16,
        "assumed",
        "ZeRO-2 checkpoint: bf16 model states (2) + fp32 master "
        "weights and Adam moments (12) + the model's safetensors (2)",
    ),
}


@dataclass(frozen=True)
class Settings:
    """What the recipe's config decides."""

    name: str
    tensor_parallel: int = 8  # vllm_tensor_parallel_size
    sampling_batch_size: int = 1
    splitter_batch_size: int = 16
    labeler_batch_size: int = 64
    activation_checkpointing: bool = True
    encode_images_once: bool = True
    checkpoints_per_iteration: int = 4  # save_steps 0.25
    save_only_model: bool = False
    divide_per_shard: bool = True  # the divide stage's vLLM calls: per shard of `shard_size` prompts, or per prompt
    shard_size: int = 16


PAPER = Settings("(a) paper's settings")  # llava15_7b.yaml, every feedback job on vLLM
RECOMMENDED = Settings(
    "(b) recommended",  # llava15_7b_vllm.yaml
    tensor_parallel=4,
    sampling_batch_size=32,
    splitter_batch_size=256,
    labeler_batch_size=128,
    activation_checkpointing=False,
)


def values(**overrides: float) -> dict[str, float]:
    """Every input's value, with overrides (for sensitivity)."""
    unknown = set(overrides) - set(INPUTS)
    if unknown:
        raise KeyError(f"Unknown inputs: {sorted(unknown)}")
    return {name: overrides.get(name, item.value) for name, item in INPUTS.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Engines


@dataclass(frozen=True)
class Engines:
    """`gpus / t` vLLM engines of tensor-parallel size `t`, each running its calls one after another."""

    t: int
    v: dict[str, float]

    @property
    def count(self) -> int:
        return int(self.v["gpus"]) // self.t

    def prefill_seconds(self, flops: float, tokens: float, model: Decoder) -> float:
        """Compute at `mfu_prefill` over the engine's t GPUs, plus tensor-parallel all-reduces (2 per layer)."""
        compute = flops / (self.t * self.v["peak_flops"] * self.v["mfu_prefill"])
        ring = 2 * (self.t - 1) / self.t
        exchanged = tokens * 2 * model.layers * model.hidden * 2 * ring
        return compute + exchanged / self.v["allreduce_bytes_per_s"]

    def step_seconds(self, model: Decoder, batch: float, context: float) -> float:
        """One decode step of `batch` sequences of `context` tokens: HBM bytes (weights + KV cache) or compute,
        whichever is slower, plus fixed costs."""
        read = (model.weight_bytes() + batch * context * model.kv_bytes_per_token()) / self.t
        memory = read / (self.v["hbm_bytes_per_s"] * self.v["hbm_efficiency"])
        compute = 2 * batch * (model.matmul_params + model.head_params)
        compute /= self.t * self.v["peak_flops"] * self.v["mfu_prefill"]
        allreduce = 2 * model.layers * self.v["allreduce_latency_s"] if self.t > 1 else 0.0
        return max(memory, compute) + self.v["step_overhead_s"] + allreduce

    def decode_seconds(self, model: Decoder, requests: float, mean_tokens: float, context: float) -> float:
        """A call's decoding: as long as its longest request at its batch, and no shorter than all its tokens at
        the engine's full batch."""
        batch = min(requests, self.v["max_num_seqs"])
        longest = mean_tokens * self.v["longest_of_call"] * self.step_seconds(model, batch, context)
        full = self.v["max_num_seqs"]
        throughput = requests * mean_tokens * self.step_seconds(model, full, context) / full
        return max(longest, throughput) if requests > 0 else 0.0

    def call_seconds(self, gpu_seconds: float, requests: float) -> float:
        """One engine call: its GPU work or its front end's CPU work (tokenizing, detokenizing; vLLM runs them in
        another process than the engine core), whichever is longer, plus the call's own cost."""
        return max(gpu_seconds, requests * self.v["frontend_s_per_request"]) + self.v["call_overhead_s"]

    def start_seconds(self, weight_bytes: float) -> float:
        fixed = self.v["engine_fixed_s_tp"] if self.t > 1 else self.v["engine_fixed_s_tp1"]
        return fixed + self.v["engine_compile_s"] + weight_bytes / self.v["disk_read_bytes_per_s"]


# ---------------------------------------------------------------------------------------------------------------------
# Stages of one iteration


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    detail: str


def claim_tokens(v: dict[str, float]) -> float:
    """Tokens of one claim: the claims of an answer restate its content, so together they are about as long."""
    return v["answer_tokens_llama3"] / v["claims_per_answer"]


def policy_prompt_tokens(v: dict[str, float]) -> float:
    return LLAVA_15_7B.vision.tokens - 1 + v["question_tokens"] + v["policy_template_tokens"]


def sampling(s: Settings, v: dict[str, float]) -> Stage:
    engines, lm = Engines(s.tensor_parallel, v), LLAVA_15_7B.language
    prompts_per_call = s.sampling_batch_size
    requests = prompts_per_call * v["candidates"]
    prefix = policy_prompt_tokens(v)
    passes = prompts_per_call * v["sampling_prefix_passes"]
    flops = passes * (LLAVA_15_7B.image_flops(1, prefix) + lm.forward_flops(prefix, head=False))
    gpu = engines.prefill_seconds(flops, passes * prefix, lm)
    gpu += engines.decode_seconds(lm, requests, v["answer_tokens"], prefix + v["answer_tokens"] / 2)
    call = engines.call_seconds(gpu, requests)
    calls = v["prompts"] / prompts_per_call / engines.count
    tokens = v["prompts"] * v["candidates"] * v["answer_tokens"]
    return Stage("sampling", calls * call, f"{tokens / 1e6:.1f}M tokens generated, {requests:.0f} requests per call")


def splitting(s: Settings, v: dict[str, float]) -> Stage:
    """One call splitting the candidates of a prompt (of a shard's prompts with `divide_per_shard`), then one or
    more calls of `splitter_batch_size` writing their claims' questions."""
    engines, lm = Engines(s.tensor_parallel, v), LLAMA_3_8B
    prompts_per_call = s.shard_size if s.divide_per_shard else 1
    answers, claims = prompts_per_call * v["candidates"], v["claims_per_answer"]
    split_in = v["chat_template_tokens"] + v["split_instruction_tokens"] + v["question_tokens"]
    split_in += v["answer_tokens_llama3"]
    split_out = v["answer_tokens_llama3"] + 2 * claims + 1
    new = split_in - v["split_shared_tokens"]
    flops = answers * lm.forward_flops(new, v["split_shared_tokens"], head=False)
    gpu = engines.prefill_seconds(flops, answers * new, lm)
    split = engines.call_seconds(
        gpu + engines.decode_seconds(lm, answers, split_out, split_in + split_out / 2), answers
    )

    questions = answers * claims
    per_call = min(questions, s.splitter_batch_size)
    q_in = v["chat_template_tokens"] + v["question_instruction_tokens"] + claim_tokens(v)
    q_out = claim_tokens(v) + 4
    new = q_in - v["question_shared_tokens"]
    flops = per_call * lm.forward_flops(new, v["question_shared_tokens"], head=False)
    gpu = engines.prefill_seconds(flops, per_call * new, lm)
    one = engines.call_seconds(gpu + engines.decode_seconds(lm, per_call, q_out, q_in + q_out / 2), per_call)
    per_group = split + math.ceil(questions / per_call) * one
    total = v["prompts"] * v["candidates"] * (split_out + claims * q_out)
    return Stage(
        "splitting",
        v["prompts"] / prompts_per_call * per_group / engines.count,
        f"{v['prompts'] * v['candidates'] * claims / 1e3:.0f}k claims, {total / 1e6:.1f}M tokens generated, "
        f"{answers:.0f} answers per split call",
    )


def labeling(s: Settings, v: dict[str, float]) -> Stage:
    """Per prompt: the image prefix once (vLLM's prefix cache), then its questions in calls of `labeler_batch_size`;
    one forward pass per question, no decoding."""
    engines, model = Engines(s.tensor_parallel, v), LLAVA_NEXT_34B
    lm = model.language
    prefix = v["labeler_image_tokens"] + v["labeler_prefix_text_tokens"]
    questions = v["candidates"] * v["claims_per_answer"]
    q = claim_tokens(v) + v["labeler_question_extra_tokens"]
    image = v["labeler_prefix_passes"] * engines.prefill_seconds(
        model.image_flops(v["labeler_tiles"], v["labeler_image_tokens"]) + lm.forward_flops(prefix, head=False),
        prefix,
        lm,
    )
    per_call = min(questions, s.labeler_batch_size)
    one = engines.prefill_seconds(per_call * lm.forward_flops(q, prefix, head=False), per_call * q, lm)
    per_prompt = image + math.ceil(questions / per_call) * engines.call_seconds(one, per_call)
    tokens = v["prompts"] * (prefix + questions * q)
    return Stage(
        "labeling",
        v["prompts"] * per_prompt / engines.count,
        f"{v['prompts'] * questions / 1e3:.0f}k questions, {tokens / 1e6:.1f}M prefill tokens",
    )


def pair_tokens(v: dict[str, float]) -> float:
    """Language-model tokens of one pair: chosen and rejected rows, each with the prompt and image."""
    return 2 * (policy_prompt_tokens(v) + v["answer_tokens"])


def dpo_pair_flops(s: Settings, v: dict[str, float]) -> tuple[float, float]:
    """(language model, vision) FLOPs of one pair's training step: forward + backward = 3 forwards, 4 with
    activation checkpointing (the forward runs again); the vision tower is trained too (nothing is frozen)."""
    factor = 4 if s.activation_checkpointing else 3
    row = policy_prompt_tokens(v) + v["answer_tokens"]
    language = 2 * LLAVA_15_7B.language.forward_flops(row) * factor
    images = 1 if s.encode_images_once else 2
    vision = images * LLAVA_15_7B.image_flops(1, LLAVA_15_7B.vision.tokens - 1) * factor
    return language, vision


def vision_share(v: dict[str, float] | None = None) -> dict[str, float]:
    """The vision tower's share of a DPO step, and what encoding each pair's image once saves."""
    v = v or values()
    language, vision_once = dpo_pair_flops(replace(PAPER, encode_images_once=True), v)
    return {
        "vision_share_of_step": 2 * vision_once / (language + 2 * vision_once),
        "encode_images_once_saving": vision_once / (language + 2 * vision_once),
    }


def reference(s: Settings, v: dict[str, float]) -> Stage:
    row = policy_prompt_tokens(v) + v["answer_tokens"]
    flops = v["pairs"] * 2 * (LLAVA_15_7B.language.forward_flops(row) + LLAVA_15_7B.image_flops(1, 576))
    seconds = flops / (v["gpus"] * v["peak_flops"] * v["mfu_reference"])
    return Stage("reference log-probs", seconds, f"{v['pairs'] * pair_tokens(v) / 1e6:.1f}M tokens, bf16 autocast")


def training(s: Settings, v: dict[str, float]) -> Stage:
    language, vision = dpo_pair_flops(s, v)
    flops = v["pairs"] * v["epochs"] * (language + vision)
    seconds = flops / (v["gpus"] * v["peak_flops"] * v["mfu_train"])
    factor = 8 if s.activation_checkpointing else 6
    return Stage("DPO training", seconds, f"{flops:.2e} FLOPs ({factor}x weights x tokens), MFU {v['mfu_train']:.0%}")


def checkpoints(s: Settings, v: dict[str, float]) -> Stage:
    params = LLAVA_15_7B.params
    per_checkpoint = params * (2 if s.save_only_model else v["checkpoint_bytes_per_param"])
    written = s.checkpoints_per_iteration * per_checkpoint + 2 * params  # and the final bf16 model
    return Stage("checkpoints", written / v["disk_write_bytes_per_s"], f"{written / 1e9:.0f} GB written")


def starts(s: Settings, v: dict[str, float]) -> Stage:
    engines = Engines(s.tensor_parallel, v)
    weights = [LLAVA_15_7B.params * 2, LLAMA_3_8B.weight_bytes(), LLAVA_NEXT_34B.params * 2]
    seconds = sum(engines.start_seconds(w) for w in weights) + v["training_start_s"]
    return Stage("engine starts, model loads", seconds, "3 vLLM engines (policy, splitter, labeler) + training")


def hub_push(s: Settings, v: dict[str, float]) -> Stage:
    pushed = LLAVA_15_7B.params * 2 + v["pairs"] * v["image_bytes"]
    return Stage("Hub push", pushed / v["upload_bytes_per_s"], f"{pushed / 1e9:.1f} GB (bf16 policy, dataset)")


STAGES = (sampling, splitting, labeling, starts, reference, training, checkpoints, hub_push)


def iteration(s: Settings, v: dict[str, float] | None = None) -> list[Stage]:
    v = v or values()
    return [stage(s, v) for stage in STAGES]


def total_hours(s: Settings, v: dict[str, float] | None = None) -> float:
    v = v or values()
    return v["iterations"] * sum(stage.seconds for stage in iteration(s, v)) / 3600


def paper_implied_mfu(v: dict[str, float] | None = None) -> float:
    """The training utilisation the paper's 6 h for four iterations implies under this model's FLOPs count."""
    v = v or values()
    language, vision = dpo_pair_flops(PAPER, v)
    flops = v["iterations"] * v["pairs"] * v["epochs"] * (language + vision)
    return flops / (6 * 3600 * v["gpus"] * v["peak_flops"])


# ---------------------------------------------------------------------------------------------------------------------
# Sensitivity

SENSITIVITY: list[tuple[str, dict[str, float]]] = [
    ("as modelled", {}),
    ("training MFU 20%", {"mfu_train": 0.20}),
    ("training MFU 45%", {"mfu_train": 0.45}),
    ("prefill MFU 30%", {"mfu_prefill": 0.30}),
    ("prefill MFU 60%", {"mfu_prefill": 0.60}),
    ("claims per answer 8", {"claims_per_answer": 8}),
    ("claims per answer 12", {"claims_per_answer": 12}),
    ("claims per answer 14.4 (clause count)", {"claims_per_answer": 14.4}),
    ("decode at 40% of HBM bandwidth", {"hbm_efficiency": 0.40}),
    ("decode step overhead 3 ms", {"step_overhead_s": 3e-3}),
    ("engine call overhead 100 ms", {"call_overhead_s": 0.1}),
    ("answers 2x longer", {"answer_tokens": 277, "answer_tokens_llama3": 233}),
    ("labeler images 2,928 tokens (square)", {"labeler_image_tokens": 2928}),
    ("labeler prefix computed for every question", {"labeler_prefix_passes": 100}),
    ("sampling prefix computed for every candidate", {"sampling_prefix_passes": 10}),
    (
        "disk 0.5 GB/s, upload 25 MB/s",
        {"disk_read_bytes_per_s": 0.5e9, "disk_write_bytes_per_s": 0.5e9, "upload_bytes_per_s": 25e6},
    ),
    (
        "all of MFU 20%/30%, 12 claims, step 3 ms",
        {"mfu_train": 0.2, "mfu_prefill": 0.3, "claims_per_answer": 12, "step_overhead_s": 3e-3},
    ),
]


def _answer_length(tokens: float) -> dict[str, float]:
    """Both tokenizers' answer lengths, scaled together."""
    ratio = INPUTS["answer_tokens_llama3"].value / INPUTS["answer_tokens"].value
    return {"answer_tokens": tokens, "answer_tokens_llama3": ratio * tokens}


# Inputs whose value at 8 h is reported: name -> (overrides for a value, search range).
BREAK_EVEN: dict[str, tuple[Callable[[float], dict[str, float]], float, float]] = {
    "mfu_train": (lambda x: {"mfu_train": x}, 0.05, 0.9),
    "mfu_prefill": (lambda x: {"mfu_prefill": x}, 0.05, 0.9),
    "claims_per_answer": (lambda x: {"claims_per_answer": x}, 1, 60),
    "answer_tokens": (_answer_length, 50, 1000),
}


def break_even(s: Settings, name: str, hours: float = 8.0) -> float | None:
    """The value of input `name` at which `s` takes `hours` (bisection over its range; None if it never does)."""
    overrides, low, high = BREAK_EVEN[name]

    def excess(x: float) -> float:
        return total_hours(s, values(**overrides(x))) - hours

    if excess(low) * excess(high) > 0:
        return None
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if excess(low) * excess(middle) > 0 else (low, middle)
    return (low + high) / 2


def sensitivity(settings: tuple[Settings, ...]) -> list[dict]:
    return [
        {"case": case, **{s.name: round(total_hours(s, values(**overrides)), 2) for s in settings}}
        for case, overrides in SENSITIVITY
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Claims and words of real answers (the measured inputs above)

_CLAUSE = re.compile(r",|;|\band\b|\bwith\b|\bwhile\b|\bwhich\b|\bwho\b|\bincluding\b|\bsuch as\b", re.IGNORECASE)


def clause_claims(text: str, max_words: int = 300) -> int:
    """Claims counted as clauses: each sentence of the first `max_words` words cut at commas, semicolons and
    "and", "with", "while", "which", "who", "including", "such as" (a generous count: opinions are kept)."""
    from rlaifv_trl.feedback.rules import sentences  # sentencex; only this measurement needs the package

    cut = " ".join(text.split()[:max_words])
    return sum(1 for sentence in sentences(cut) for part in _CLAUSE.split(sentence) if re.search(r"[A-Za-z]", part))


def count_answers(path: Path) -> dict[str, float]:
    """Mean words, sentences and claims of the answers in a JSON-lines file (`prompt` and `text` per line): the
    rule-based splitter's claims and the clause count."""
    from rlaifv_trl.feedback.rules import RuleBasedClaimSplitter, sentences

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    prompts, answers = [row["prompt"] for row in rows], [row["text"] for row in rows]
    rules = RuleBasedClaimSplitter(max_input_words=300).split(prompts, answers)
    n = len(rows)
    return {
        "answers": n,
        "words": round(sum(len(a.split()) for a in answers) / n, 1),
        "sentences": round(sum(len(sentences(a)) for a in answers) / n, 2),
        "claims_rule_based_splitter": round(sum(map(len, rules)) / n, 2),
        "claims_clauses": round(sum(map(clause_claims, answers)) / n, 2),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Output


def stage_table(settings: tuple[Settings, ...], v: dict[str, float]) -> str:
    runs = {s.name: iteration(s, v) for s in settings}
    head = "| stage | " + " | ".join(f"{s.name}: per iteration | 4 iterations" for s in settings) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(settings)]
    for i, stage in enumerate(STAGES):
        cells = []
        for s in settings:
            seconds = runs[s.name][i].seconds
            cells += [f"{seconds / 60:.1f} min", f"{v['iterations'] * seconds / 3600:.2f} h"]
        lines.append(f"| {stage(settings[0], v).name} | " + " | ".join(cells) + " |")
    cells = []
    for s in settings:
        seconds = sum(stage.seconds for stage in runs[s.name])
        cells += [f"**{seconds / 60:.0f} min**", f"**{v['iterations'] * seconds / 3600:.1f} h**"]
    lines.append("| **total** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def inputs_table() -> str:
    lines = ["| input | value | | source |", "|---|---:|---|---|"]
    for name, item in INPUTS.items():
        lines.append(f"| `{name}` | {item.value:g} | {item.kind} | {item.source} |")
    return "\n".join(lines)


def sensitivity_table(settings: tuple[Settings, ...]) -> str:
    rows = sensitivity(settings)
    lines = ["| case | " + " | ".join(s.name for s in settings) + " |", "|---|" + "---:|" * len(settings)]
    lines += [f"| {row['case']} | " + " | ".join(f"{row[s.name]:.1f} h" for s in settings) + " |" for row in rows]
    return "\n".join(lines)


def break_even_lines(s: Settings) -> str:
    lines = []
    for name in BREAK_EVEN:
        value = break_even(s, name)
        shown = "never in range" if value is None else f"{value:.3g}"
        lines.append(f"- `{name}` at {shown} (modelled: {INPUTS[name].value:g})")
    return "\n".join(lines)


def doc_blocks() -> dict[str, str]:
    """The markdown blocks of docs/scaling.md that this script produces, by marker name."""
    settings = (PAPER, RECOMMENDED)
    v = values()
    share = vision_share(v)
    notes = [
        f"- {s.name}: " + "; ".join(f"{stage.name}: {stage.detail}" for stage in iteration(s, v)) for s in settings
    ]
    notes.append(
        f"- vision tower: {share['vision_share_of_step']:.1%} of a DPO step that encodes each pair's image twice; "
        f"`encode_images_once` saves {share['encode_images_once_saving']:.1%} of the step"
    )
    per_prompt = [splitting(replace(s, divide_per_shard=False), v).seconds / 60 for s in settings]
    notes.append(
        "- splitting with one engine call per prompt instead of per shard: "
        + ", ".join(f"{s.name} {minutes:.0f} min" for s, minutes in zip(settings, per_prompt))
        + " per iteration"
    )
    notes.append(f"- training utilisation the paper's 6 h implies under this FLOPs count: {paper_implied_mfu(v):.0%}")
    return {
        "inputs": inputs_table(),
        "stages": stage_table(settings, v) + "\n\n" + "\n".join(notes),
        "sensitivity": sensitivity_table(settings),
        "break-even": f"{RECOMMENDED.name} reaches 8 h with:\n" + break_even_lines(RECOMMENDED),
    }


def write_doc(path: Path) -> None:
    """Replace the blocks between `<!-- scaling-model:NAME:start/end -->` markers with this script's output."""
    text = path.read_text()
    for name, block in doc_blocks().items():
        pattern = re.compile(rf"(<!-- scaling-model:{name}:start -->\n).*?(<!-- scaling-model:{name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{path} has no {name} markers")
        text = pattern.sub(lambda match, block=block: match.group(1) + block + "\n" + match.group(2), text)
    path.write_text(text)


def figures() -> dict:
    v = values()
    settings = (PAPER, RECOMMENDED)
    return {
        "settings": {
            s.name: {
                "config": s.__dict__,
                "stages_seconds_per_iteration": {stage.name: round(stage.seconds, 1) for stage in iteration(s, v)},
                "details": {stage.name: stage.detail for stage in iteration(s, v)},
                "total_hours": round(total_hours(s, v), 2),
            }
            for s in settings
        },
        "vision_tower": {k: round(x, 4) for k, x in vision_share(v).items()},
        "paper_implied_training_mfu": round(paper_implied_mfu(v), 3),
        "params": {
            "llava-1.5-7b": LLAVA_15_7B.params,
            "llava-next-34b": LLAVA_NEXT_34B.params,
            "llama-3-8b": LLAMA_3_8B.params,
        },
        "sensitivity_hours": sensitivity(settings),
        "inputs": {name: item.__dict__ for name, item in INPUTS.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Write the figures to this file.")
    parser.add_argument("--inputs", action="store_true", help="Print every input with its provenance.")
    parser.add_argument("--count-answers", type=Path, help="Words and claims of the answers of a JSON-lines file.")
    parser.add_argument("--write-doc", type=Path, help="Regenerate the model's blocks of this markdown file.")
    options = parser.parse_args(argv)
    if options.count_answers:
        counts = count_answers(options.count_answers)
        print(json.dumps(counts, indent=2))
        return counts
    result = figures()
    blocks = doc_blocks()
    if options.write_doc:
        write_doc(options.write_doc)
    elif options.inputs:
        print(blocks["inputs"])
    else:
        print("\n\n".join(blocks[name] for name in ("stages", "sensitivity", "break-even")))
    if options.json:
        options.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
