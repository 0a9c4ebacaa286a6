"""Configuration of the RLAIF-V feedback pipeline."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from ..loading import ModelLoading, vllm_loading_check


DEFAULT_YES_NO_INSTRUCTION = "Please answer yes or no."
DTYPES = ["auto", "bfloat16", "float16", "float32"]
BACKENDS = ["transformers", "vllm"]


@dataclass(frozen=True)
class SamplingSettings:
    """How the candidates are sampled (`FeedbackConfig.sampling`): the keyword arguments of `CandidateSampler` and
    of `VLLMCandidateSampler` alike."""

    num_candidates: int = 10
    temperature: float = 0.7
    max_new_tokens: int = 512
    top_p: float | None = None
    top_k: int | None = None
    generation_kwargs: dict[str, Any] | None = None


@dataclass(frozen=True)
class CompletionSettings:
    """How a language model completes instructions (`FeedbackConfig.splitter_sampling`): the keyword arguments of
    `CausalLMRunner` and of `VLLMCausalLMRunner` alike."""

    temperature: float = 0.2
    top_p: float = 0.9
    max_new_tokens: int = 256
    batch_size: int = 16


@dataclass
class FeedbackConfig:
    r"""
    Configuration of [`RLAIFVFeedbackGenerator`]: candidate sampling, claim splitting, yes/no labeling, pair building.

    A flat dataclass in the style of TRL's configs: `TrlParser` parses it beside [`RLAIFVDPOConfig`], so every field
    is a command-line flag (`--num_candidates 4`) and a YAML key. Defaults follow the RLAIF-V paper and its reference
    implementation; behaviour beyond it is opt-in. Where the output goes and the run's seed are arguments of
    [`RLAIFVFeedbackGenerator.generate`], not settings of this config: the run's `seed` (in the recipe, the training
    arguments' `seed`, which seeds the whole run) seeds the feedback, every prompt's sampling, splitting and pair
    sampling drawing from seeds derived from it and the prompt's id.

    Parameters:
        > Candidate sampling

        num_candidates (`int`, *optional*, defaults to `10`):
            Answers sampled per prompt, all with the same decoding parameters (deconfounded sampling).
        temperature (`float`, *optional*, defaults to `0.7`):
            Sampling temperature of the candidates.
        top_p (`float` or `None`, *optional*, defaults to `None`):
            Nucleus sampling of the candidates; `None` keeps the model's generation config (the paper sets none).
        top_k (`int` or `None`, *optional*, defaults to `None`):
            Top-k sampling of the candidates; `None` keeps the model's generation config.
        max_new_tokens (`int`, *optional*, defaults to `512`):
            Longest candidate answer, in tokens.
        generation_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            Further keyword arguments for the policy's `generate` (e.g. `{"repetition_penalty": 1.1}`; a JSON string
            on the command line).
        sampling_batch_size (`int`, *optional*, defaults to `1`):
            Prompts sampled together in one `generate` call (each with its `num_candidates` rows). Every candidate is
            sampled with its own generator seeded from its prompt's seed, so the candidates are the same whatever
            this is (up to the float rounding of batched forward passes): a resumed run may change it. With
            `sampling_backend="vllm"`: prompts per engine call.
        shard_size (`int`, *optional*, defaults to `16`):
            Prompts per shard. A shard is the unit of work that is saved, resumed and distributed over processes.

        > Divide: claims and questions

        splitter_model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            Causal language model that splits answers into claims. `None` uses the offline rule-based splitter.
        question_writer_model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            Causal language model that turns claims into polar questions. `None` uses the splitter's model when
            there is one, else the rule-based question writer. It is loaded with the splitter's loading options.
        splitter_temperature (`float`, *optional*, defaults to `0.2`):
            Sampling temperature of the language-model splitter and question writer.
        splitter_top_p (`float`, *optional*, defaults to `0.9`):
            Nucleus sampling of the language-model splitter and question writer.
        splitter_max_new_tokens (`int`, *optional*, defaults to `256`):
            Longest output of the language-model splitter and question writer, in tokens.
        splitter_max_input_words (`int`, *optional*, defaults to `300`):
            Answers are cut to their first this many words before splitting.
        splitter_batch_size (`int`, *optional*, defaults to `16`):
            Inputs per `generate` call of the language-model splitter and question writer (per engine call with
            `splitter_backend="vllm"`).
        splitter_model_revision (`str`, *optional*, defaults to `"main"`):
            Revision (branch, tag or commit) of the splitter and question writer models.
        splitter_dtype (`str`, *optional*, defaults to `"float32"`):
            Dtype the splitter and question writer are loaded in: `"auto"`, `"bfloat16"`, `"float16"` or `"float32"`.
        splitter_attn_implementation (`str` or `None`, *optional*, defaults to `None`):
            Attention implementation of the splitter and question writer (e.g. `"sdpa"`, `"flash_attention_2"`).
        splitter_trust_remote_code (`bool`, *optional*, defaults to `False`):
            Allow the splitter and question writer repositories to run their own code.
        splitter_load_in_4bit (`bool`, *optional*, defaults to `False`):
            Load the splitter and question writer quantized to 4 bits (NF4, needs `bitsandbytes`).
        splitter_load_in_8bit (`bool`, *optional*, defaults to `False`):
            Load the splitter and question writer quantized to 8 bits (needs `bitsandbytes`).

        > Conquer: yes/no labeling

        labeler_model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            Vision-language model that answers the polar questions. `None` labels with the policy itself
            (self-feedback), unless a labeler model is passed to the generator.
        yes_no_instruction (`str`, *optional*, defaults to `"Please answer yes or no."`):
            Appended to every polar question sent to the labeler.
        labeler_batch_size (`int`, *optional*, defaults to `64`):
            Questions per forward pass of the labeler. They run packed into a few rows on the image prefix's KV
            cache, which they read in place: a pass's memory grows with its questions' tokens and its rows, not
            with questions x prefix.
            It changes float rounding only, so a resumed run may change it (e.g. after running out of memory). With
            `labeler_backend="vllm"`: questions per engine call.
        labeler_model_revision (`str`, *optional*, defaults to `"main"`):
            Revision (branch, tag or commit) of the labeler model.
        labeler_dtype (`str`, *optional*, defaults to `"float32"`):
            Dtype the labeler is loaded in: `"auto"`, `"bfloat16"`, `"float16"` or `"float32"`.
        labeler_attn_implementation (`str` or `None`, *optional*, defaults to `None`):
            Attention implementation of the labeler (e.g. `"sdpa"`, `"flash_attention_2"`).
        labeler_trust_remote_code (`bool`, *optional*, defaults to `False`):
            Allow the labeler repository to run its own code.
        labeler_load_in_4bit (`bool`, *optional*, defaults to `False`):
            Load the labeler quantized to 4 bits (NF4, needs `bitsandbytes`).
        labeler_load_in_8bit (`bool`, *optional*, defaults to `False`):
            Load the labeler quantized to 8 bits (needs `bitsandbytes`).

        > Backends

        sampling_backend (`str`, *optional*, defaults to `"transformers"`):
            What samples the candidates: `"transformers"` (`generate`) or `"vllm"` (the policy served by vLLM; it
            must then be given by name or folder).
        splitter_backend (`str`, *optional*, defaults to `"transformers"`):
            What runs the language-model splitter and question writer: `"transformers"` or `"vllm"`.
        labeler_backend (`str`, *optional*, defaults to `"transformers"`):
            What runs the labeler: `"transformers"` (prefix-shared forward passes) or `"vllm"` (p(yes)/p(no) from
            the first generated token's log-probabilities, the image prefix reused through vLLM's prefix caching).
        labeler_top_logprobs (`int` or `None`, *optional*, defaults to `None`):
            Deprecated and ignored, to be removed: the vLLM labeler reads the log-probabilities of its yes/no tokens
            by id (exact, without the whole vocabulary), which leaves nothing to choose.
        vllm_python (`str` or `None`, *optional*, defaults to `None`):
            Python interpreter with vLLM that runs the engines (e.g. `.venv-vllm/bin/python` from
            `scripts/make_vllm_env.sh`); `None`: `RLAIFV_VLLM_PYTHON`, else this Python.
        vllm_gpu_memory_utilization (`float`, *optional*, defaults to `0.9`):
            Share of each GPU's memory a vLLM engine may take. Engines run one at a time, during their stage, and
            release their memory before the next stage and before training. vLLM refuses to start when less than
            this share is free: what the processes' own models hold on the GPUs (e.g. a policy sampled with
            transformers) must fit in the rest.
        vllm_tensor_parallel_size (`int`, *optional*, defaults to `1`):
            GPUs one vLLM engine spans, its weights split over them (e.g. 8 for a 34B labeler on 8 GPUs). In one
            process, that process's engine spans this many GPUs. With N processes (`accelerate launch`) it must
            divide the processes of each node: the processes form N / t groups of t consecutive ranks, and the
            first rank of each group runs one engine over its group's GPUs for the group's shards while the other
            ranks wait (t = N: one engine on the main process, which runs every shard); with 1, every process runs
            its own engine on its own GPU. Every stage on vLLM uses it; stages on transformers run on every process.
        vllm_data_parallel_size (`int`, *optional*, defaults to `1`):
            Replicas of one vLLM engine (vLLM's data parallelism), for a single process driving several GPUs; with
            several processes (the processes are the data parallelism) it must be 1.
        vllm_max_model_len (`int` or `None`, *optional*, defaults to `None`):
            Longest sequence a vLLM engine accepts (prompt and output); `None`: the model's own limit.
        vllm_enable_prefix_caching (`bool`, *optional*, defaults to `True`):
            Reuse the KV cache of shared prompt prefixes in vLLM (a prompt's candidates, a group's questions).
        vllm_engine_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            Further keyword arguments of `vllm.LLM` (a JSON string on the command line).

        > Pairs

        confirmed_claim_weight (`float`, *optional*, defaults to `0.0`):
            An answer's score is this weight times its number of confirmed claims minus its number of rejected ones.
            `0.0` is RLAIF-V's score (minus the rejected claims), which gives no credit for what an answer gets right,
            so shorter answers tend to be chosen; `1.0` scores confirmed minus rejected claims, so of two answers with
            the same rejected claims the one confirming more wins.
        min_score_gap (`float`, *optional*, defaults to `1.0`):
            Two answers of a prompt form a pair when their scores (see `confirmed_claim_weight`) differ by at least
            this much.
        max_confirmed_claim_drop (`int` or `None`, *optional*, defaults to `None`):
            Keep a pair only when its chosen answer confirms at most this many claims fewer than its rejected answer
            (`0`: at least as many), so that no pair prefers an answer for leaving true claims out (RLAIF-V's score
            alone prefers an answer that drops a hallucinated claim together with true ones). `None`: no such
            condition (RLAIF-V).
        max_claim_drop (`int` or `None`, *optional*, defaults to `None`):
            Keep a pair only when its chosen answer names at most this many claims fewer than its rejected answer.
            With `0` the chosen answer says as much as the rejected one and has fewer rejected claims, so it has
            true claims where the other has hallucinated ones, and no pair teaches stopping early. `None`: no such
            condition (RLAIF-V).
        pairs_per_prompt (`int` or `None`, *optional*, defaults to `2`):
            Pairs sampled per prompt among the possible ones; `None` keeps them all.
        length_balancing (`bool`, *optional*, defaults to `True`):
            Drop pairs whose chosen answer is much shorter than the rejected one, with the cut chosen to make the
            mean chosen and rejected lengths closest (as in the reference implementation).
        length_balancing_step (`float`, *optional*, defaults to `0.02`):
            Step of the grid of cut ratios (0, step, 2 * step, ... < 1) searched by length balancing.

        > Rows

        strict_rows (`bool`, *optional*, defaults to `False`):
            Raise `BadRowError`, naming the row and the problem, on the first unusable row instead of skipping it and
            counting it in the report (as `RowValidation(strict=True)` does). The recipe applies it to every dataset
            it reads: the prompts, published pairs, and the pairs `RLAIFVDPOTrainer` trains on (through the
            `RowValidation` it builds with it).
    """

    # Which fields decide results (see `rlaifv_trl.manifest`); the others, batch sizes that change float rounding
    # only, where vLLM runs and raising on a bad row instead of skipping it, may change in a resumed run.
    result_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "num_candidates", "temperature", "top_p", "top_k", "max_new_tokens", "generation_kwargs", "shard_size",
            "splitter_model_name_or_path", "question_writer_model_name_or_path", "splitter_temperature",
            "splitter_top_p", "splitter_max_new_tokens", "splitter_max_input_words", "splitter_batch_size",
            "splitter_model_revision", "splitter_dtype", "splitter_attn_implementation", "splitter_trust_remote_code",
            "splitter_load_in_4bit", "splitter_load_in_8bit", "labeler_model_name_or_path", "yes_no_instruction",
            "labeler_model_revision", "labeler_dtype", "labeler_attn_implementation", "labeler_trust_remote_code",
            "labeler_load_in_4bit", "labeler_load_in_8bit", "sampling_backend", "splitter_backend", "labeler_backend",
            "vllm_enable_prefix_caching", "vllm_engine_kwargs", "confirmed_claim_weight", "min_score_gap",
            "max_confirmed_claim_drop", "max_claim_drop", "pairs_per_prompt", "length_balancing",
            "length_balancing_step",
        }
    )  # fmt: skip
    fields_not_affecting_results: ClassVar[frozenset[str]] = frozenset(
        {
            "labeler_batch_size", "sampling_batch_size", "vllm_python", "vllm_gpu_memory_utilization",
            "vllm_tensor_parallel_size", "vllm_data_parallel_size", "vllm_max_model_len", "labeler_top_logprobs",
            "strict_rows",
        }
    )  # fmt: skip

    # Candidate sampling
    num_candidates: int = field(default=10, metadata={"help": "Answers sampled per prompt."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the candidates."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling of the candidates (None: model's)."})
    top_k: int | None = field(default=None, metadata={"help": "Top-k sampling of the candidates (None: model's)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Longest candidate answer, in tokens."})
    generation_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Further keyword arguments for the policy's generate (JSON on the command line)."},
    )
    sampling_batch_size: int = field(default=1, metadata={"help": "Prompts per generate call of the sampler."})
    shard_size: int = field(default=16, metadata={"help": "Prompts per shard (unit of saving, resuming, sharding)."})

    # Divide: claims and questions
    splitter_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Causal LM that splits answers into claims; None: rule-based splitter."}
    )
    question_writer_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Causal LM that writes polar questions; None: the splitter's model or rules."}
    )
    splitter_temperature: float = field(default=0.2, metadata={"help": "Sampling temperature of the LM splitter."})
    splitter_top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling of the LM splitter."})
    splitter_max_new_tokens: int = field(default=256, metadata={"help": "Longest LM splitter output, in tokens."})
    splitter_max_input_words: int = field(default=300, metadata={"help": "Answers are cut to this many words."})
    splitter_batch_size: int = field(default=16, metadata={"help": "Inputs per generate call of the LM splitter."})
    splitter_model_revision: str = field(default="main", metadata={"help": "Revision of the splitter model."})
    splitter_dtype: str = field(
        default="float32", metadata={"help": "Dtype of the splitter model.", "choices": DTYPES}
    )
    splitter_attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention implementation of the splitter model."}
    )
    splitter_trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow the splitter repository to run its own code."}
    )
    splitter_load_in_4bit: bool = field(
        default=False, metadata={"help": "Load the splitter in 4 bits (bitsandbytes)."}
    )
    splitter_load_in_8bit: bool = field(
        default=False, metadata={"help": "Load the splitter in 8 bits (bitsandbytes)."}
    )

    # Conquer: yes/no labeling
    labeler_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Labeler VLM; None: the policy labels its own claims (self-feedback)."}
    )
    yes_no_instruction: str = field(
        default=DEFAULT_YES_NO_INSTRUCTION, metadata={"help": "Appended to every polar question."}
    )
    labeler_batch_size: int = field(default=64, metadata={"help": "Questions per forward pass of the labeler."})
    labeler_model_revision: str = field(default="main", metadata={"help": "Revision of the labeler model."})
    labeler_dtype: str = field(default="float32", metadata={"help": "Dtype of the labeler model.", "choices": DTYPES})
    labeler_attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention implementation of the labeler model."}
    )
    labeler_trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow the labeler repository to run its own code."}
    )
    labeler_load_in_4bit: bool = field(default=False, metadata={"help": "Load the labeler in 4 bits (bitsandbytes)."})
    labeler_load_in_8bit: bool = field(default=False, metadata={"help": "Load the labeler in 8 bits (bitsandbytes)."})

    # Backends
    sampling_backend: str = field(
        default="transformers", metadata={"help": "What samples the candidates.", "choices": BACKENDS}
    )
    splitter_backend: str = field(
        default="transformers",
        metadata={"help": "What runs the LM splitter and question writer.", "choices": BACKENDS},
    )
    labeler_backend: str = field(
        default="transformers", metadata={"help": "What runs the labeler.", "choices": BACKENDS}
    )
    labeler_top_logprobs: int | None = field(
        default=None, metadata={"help": "Deprecated and ignored: the vLLM labeler reads its yes/no tokens by id."}
    )
    vllm_python: str | None = field(default=None, metadata={"help": "Python interpreter that has vLLM."})
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "GPU memory share of a vLLM engine."})
    vllm_tensor_parallel_size: int = field(
        default=1,
        metadata={
            "help": "GPUs one vLLM engine spans; under N processes, one engine per group of this many ranks, run by "
            "the group's first rank."
        },
    )
    vllm_data_parallel_size: int = field(default=1, metadata={"help": "Replicas of one vLLM engine."})
    vllm_max_model_len: int | None = field(default=None, metadata={"help": "Longest sequence of a vLLM engine."})
    vllm_enable_prefix_caching: bool = field(default=True, metadata={"help": "vLLM prefix caching."})
    vllm_engine_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Further keyword arguments of vllm.LLM (JSON on the command line)."}
    )

    # Pairs
    confirmed_claim_weight: float = field(
        default=0.0,
        metadata={
            "help": "Score = this weight x confirmed claims - rejected claims; 0: RLAIF-V's -(rejected claims)."
        },
    )
    min_score_gap: float = field(default=1.0, metadata={"help": "Smallest score difference that makes a pair."})
    max_confirmed_claim_drop: int | None = field(
        default=None,
        metadata={
            "help": "Keep a pair only when its chosen answer confirms at most this many claims fewer than the "
            "rejected one (0: at least as many); None: no such condition (RLAIF-V)."
        },
    )
    max_claim_drop: int | None = field(
        default=None,
        metadata={
            "help": "Keep a pair only when its chosen answer names at most this many claims fewer than the rejected "
            "one (0: at least as many); None: no such condition (RLAIF-V)."
        },
    )
    pairs_per_prompt: int | None = field(default=2, metadata={"help": "Pairs sampled per prompt; None keeps all."})
    length_balancing: bool = field(default=True, metadata={"help": "Balance chosen and rejected answer lengths."})
    length_balancing_step: float = field(default=0.02, metadata={"help": "Grid step of the length-balancing cut."})

    # Rows
    strict_rows: bool = field(
        default=False,
        metadata={
            "help": "Raise on the first unusable row of a dataset (naming it) instead of skipping it and counting it "
            "in the report; the recipe applies it to every dataset it reads."
        },
    )

    def __post_init__(self) -> None:
        for name in (
            "labeler_model_name_or_path",
            "splitter_model_name_or_path",
            "question_writer_model_name_or_path",
        ):
            if isinstance(getattr(self, name), str) and getattr(self, name).strip().lower() in ("", "none", "null"):
                setattr(self, name, None)  # `--labeler_model_name_or_path none`: self-feedback
        for name in ("generation_kwargs", "vllm_engine_kwargs"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, json.loads(value) if value.strip() else None)

        def require(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(message)

        for name in ("shard_size", "num_candidates", "max_new_tokens", "splitter_max_new_tokens"):
            require(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("splitter_max_input_words", "splitter_batch_size", "labeler_batch_size", "sampling_batch_size"):
            require(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        require(self.temperature > 0, f"temperature must be positive (sampling), got {self.temperature}")
        require(
            self.splitter_temperature > 0, f"splitter_temperature must be positive, got {self.splitter_temperature}"
        )
        require(self.top_p is None or 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        require(0 < self.splitter_top_p <= 1, f"splitter_top_p must be in (0, 1], got {self.splitter_top_p}")
        require(self.top_k is None or self.top_k >= 1, f"top_k must be at least 1, got {self.top_k}")
        require(
            math.isfinite(self.confirmed_claim_weight) and self.confirmed_claim_weight >= 0,
            f"confirmed_claim_weight must be a finite number >= 0, got {self.confirmed_claim_weight}",
        )
        require(self.min_score_gap > 0, f"min_score_gap must be positive, got {self.min_score_gap}")
        for name in ("max_confirmed_claim_drop", "max_claim_drop"):
            value = getattr(self, name)
            require(value is None or value >= 0, f"{name} must be >= 0 or None, got {value}")
        require(
            self.pairs_per_prompt is None or self.pairs_per_prompt >= 1,
            f"pairs_per_prompt must be at least 1 or None, got {self.pairs_per_prompt}",
        )
        require(
            0 < self.length_balancing_step < 1,
            f"length_balancing_step must be in (0, 1), got {self.length_balancing_step}",
        )
        require(bool(self.yes_no_instruction.strip()), "yes_no_instruction must not be empty")
        reserved = {"do_sample", "temperature", "top_p", "top_k", "max_new_tokens", "num_return_sequences"}
        clash = sorted(reserved & set(self.generation_kwargs or {}))
        require(not clash, f"generation_kwargs must not set {clash}: use the config fields of the same name")
        for name in ("sampling_backend", "splitter_backend", "labeler_backend"):
            require(getattr(self, name) in BACKENDS, f"{name} must be one of {BACKENDS}, got {getattr(self, name)!r}")
        if self.labeler_top_logprobs is not None:
            warnings.warn(
                "labeler_top_logprobs is deprecated and ignored, and will be removed: the vLLM labeler reads the "
                "log-probabilities of its yes/no tokens by id, exactly and without the whole vocabulary",
                FutureWarning,
                stacklevel=2,
            )
        require(
            self.splitter_backend == "transformers"
            or self.splitter_model_name_or_path is not None
            or self.question_writer_model_name_or_path is not None,
            "splitter_backend='vllm' needs a language model: set splitter_model_name_or_path (the rule-based "
            "splitter runs on no backend)",
        )
        for name in ("vllm_tensor_parallel_size", "vllm_data_parallel_size"):
            require(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        require(
            0 < self.vllm_gpu_memory_utilization <= 1,
            f"vllm_gpu_memory_utilization must be in (0, 1], got {self.vllm_gpu_memory_utilization}",
        )
        for role, backend, loading in (
            ("labeler", self.labeler_backend, self.labeler_loading),
            ("splitter", self.splitter_backend, self.splitter_loading),
        ):
            if backend == "vllm":
                vllm_loading_check(loading, f"{role}_")
        self.labeler_loading.check()
        self.splitter_loading.check()

    @property
    def labeler_loading(self) -> ModelLoading:
        """How the labeler model is loaded (its `labeler_*` loading fields)."""
        return ModelLoading.from_prefixed(self, "labeler_")

    @property
    def splitter_loading(self) -> ModelLoading:
        """How the splitter and question writer models are loaded (their `splitter_*` loading fields)."""
        return ModelLoading.from_prefixed(self, "splitter_")

    @property
    def sampling(self) -> SamplingSettings:
        """How the candidates are sampled, whichever backend samples them."""
        return SamplingSettings(
            self.num_candidates, self.temperature, self.max_new_tokens, self.top_p, self.top_k, self.generation_kwargs
        )

    @property
    def splitter_sampling(self) -> CompletionSettings:
        """How the language-model splitter and question writer sample, whichever backend runs them."""
        return CompletionSettings(
            self.splitter_temperature, self.splitter_top_p, self.splitter_max_new_tokens, self.splitter_batch_size
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
