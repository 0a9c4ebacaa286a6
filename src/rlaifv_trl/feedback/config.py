"""Configuration of the RLAIF-V feedback pipeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


DEFAULT_YES_NO_INSTRUCTION = "Please answer yes or no."


@dataclass
class FeedbackConfig:
    r"""
    Configuration of [`RLAIFVFeedbackGenerator`]: candidate sampling, claim splitting, yes/no labeling, pair building.

    Defaults follow the RLAIF-V paper and its reference implementation; behaviour beyond it is opt-in.

    Parameters:
        > Run

        output_dir (`str` or `None`, *optional*, defaults to `None`):
            Directory for the stage shards, the final datasets (`preference/`, `audit/`) and `report.json`. Running
            again with the same directory resumes: finished shards are not recomputed. `None` uses a temporary
            directory that is removed at the end (no resume).
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Delete the results of an earlier run in `output_dir` whose settings differ, instead of raising.
        seed (`int`, *optional*, defaults to `42`):
            Base seed. Each prompt gets its own seed derived from `seed` and its prompt id, so results do not depend
            on the order of the prompts, on sharding or on the number of processes.
        iteration (`int`, *optional*, defaults to `0`):
            Iteration of the RLAIF-V loop, recorded in the output.
        shard_size (`int`, *optional*, defaults to `16`):
            Prompts per shard. A shard is the unit of work that is saved, resumed and distributed over processes.
        disable_tqdm (`bool`, *optional*, defaults to `False`):
            Hide the progress bars (shown on the main process only).

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
            Further keyword arguments for the policy's `generate` (e.g. `{"repetition_penalty": 1.1}`).

        > Divide: claims and questions

        splitter_model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            Causal language model that splits answers into claims. `None` uses the offline rule-based splitter.
        question_writer_model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            Causal language model that turns claims into polar questions. `None` uses the splitter's model when
            there is one, else the rule-based question writer.
        splitter_temperature (`float`, *optional*, defaults to `0.2`):
            Sampling temperature of the language-model splitter and question writer.
        splitter_top_p (`float`, *optional*, defaults to `0.9`):
            Nucleus sampling of the language-model splitter and question writer.
        splitter_max_new_tokens (`int`, *optional*, defaults to `256`):
            Longest output of the language-model splitter and question writer, in tokens.
        splitter_max_input_words (`int`, *optional*, defaults to `300`):
            Answers are cut to their first this many words before splitting.
        splitter_batch_size (`int`, *optional*, defaults to `16`):
            Inputs per `generate` call of the language-model splitter and question writer.

        > Conquer: yes/no labeling

        labeler_model_name_or_path (`str` or `None`, *optional*, defaults to `None`):
            Vision-language model that answers the polar questions. `None` labels with the policy itself
            (self-feedback), unless a labeler model is passed to the generator.
        yes_no_instruction (`str`, *optional*, defaults to `"Please answer yes or no."`):
            Appended to every polar question sent to the labeler.
        labeler_batch_size (`int`, *optional*, defaults to `64`):
            Questions per forward pass of the labeler.

        > Pairs

        min_score_gap (`float`, *optional*, defaults to `1.0`):
            Two answers of a prompt form a pair when their scores (minus the number of rejected claims) differ by at
            least this much.
        pairs_per_prompt (`int` or `None`, *optional*, defaults to `2`):
            Pairs sampled per prompt among the possible ones; `None` keeps them all.
        length_balancing (`bool`, *optional*, defaults to `True`):
            Drop pairs whose chosen answer is much shorter than the rejected one, with the cut chosen to make the
            mean chosen and rejected lengths closest (as in the reference implementation).
        length_balancing_step (`float`, *optional*, defaults to `0.02`):
            Step of the grid of cut ratios (0, step, 2 * step, ... < 1) searched by length balancing.

        > Models

        model_init_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            Keyword arguments for `from_pretrained` when a model is given by name (e.g. `{"dtype": "bfloat16"}`).
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Allow models and processors given by name to run code from their repository.
    """

    output_dir: str | None = field(
        default=None,
        metadata={"help": "Directory for shards, final datasets and report; a rerun resumes. None: temporary."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace an earlier run in output_dir whose settings differ."}
    )
    seed: int = field(default=42, metadata={"help": "Base seed; each prompt's seed derives from it and its id."})
    iteration: int = field(default=0, metadata={"help": "Iteration of the RLAIF-V loop, recorded in the output."})
    shard_size: int = field(default=16, metadata={"help": "Prompts per shard (unit of saving, resuming, sharding)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bars."})

    num_candidates: int = field(default=10, metadata={"help": "Answers sampled per prompt."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the candidates."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling of the candidates (None: model's)."})
    top_k: int | None = field(default=None, metadata={"help": "Top-k sampling of the candidates (None: model's)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Longest candidate answer, in tokens."})
    generation_kwargs: dict[str, Any] | None = field(
        default=None, metadata={"help": "Further keyword arguments for the policy's generate."}
    )

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

    labeler_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Labeler VLM; None: the policy labels its own claims (self-feedback)."}
    )
    yes_no_instruction: str = field(
        default=DEFAULT_YES_NO_INSTRUCTION, metadata={"help": "Appended to every polar question."}
    )
    labeler_batch_size: int = field(default=64, metadata={"help": "Questions per forward pass of the labeler."})

    min_score_gap: float = field(default=1.0, metadata={"help": "Smallest score difference that makes a pair."})
    pairs_per_prompt: int | None = field(default=2, metadata={"help": "Pairs sampled per prompt; None keeps all."})
    length_balancing: bool = field(default=True, metadata={"help": "Balance chosen and rejected answer lengths."})
    length_balancing_step: float = field(default=0.02, metadata={"help": "Grid step of the length-balancing cut."})

    model_init_kwargs: dict[str, Any] | None = field(
        default=None, metadata={"help": "Keyword arguments for from_pretrained of models given by name."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow models given by name to run code from their repository."}
    )

    def __post_init__(self) -> None:
        def require(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(message)

        for name in ("shard_size", "num_candidates", "max_new_tokens", "splitter_max_new_tokens"):
            require(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("splitter_max_input_words", "splitter_batch_size", "labeler_batch_size"):
            require(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        require(self.temperature > 0, f"temperature must be positive (sampling), got {self.temperature}")
        require(
            self.splitter_temperature > 0, f"splitter_temperature must be positive, got {self.splitter_temperature}"
        )
        require(self.top_p is None or 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        require(0 < self.splitter_top_p <= 1, f"splitter_top_p must be in (0, 1], got {self.splitter_top_p}")
        require(self.top_k is None or self.top_k >= 1, f"top_k must be at least 1, got {self.top_k}")
        require(self.min_score_gap > 0, f"min_score_gap must be positive, got {self.min_score_gap}")
        require(
            self.pairs_per_prompt is None or self.pairs_per_prompt >= 1,
            f"pairs_per_prompt must be at least 1 or None, got {self.pairs_per_prompt}",
        )
        require(
            0 < self.length_balancing_step < 1,
            f"length_balancing_step must be in (0, 1), got {self.length_balancing_step}",
        )
        require(bool(self.yes_no_instruction.strip()), "yes_no_instruction must not be empty")
        require(self.iteration >= 0, f"iteration must be non-negative, got {self.iteration}")
        reserved = {"do_sample", "temperature", "top_p", "top_k", "max_new_tokens", "num_return_sequences"}
        clash = sorted(reserved & set(self.generation_kwargs or {}))
        require(not clash, f"generation_kwargs must not set {clash}: use the config fields of the same name")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
