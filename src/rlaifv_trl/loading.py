"""Loading the policy, the labeler and the splitter the way TRL's scripts load a model.

Every model the project loads by name goes through `ModelLoading`: the revision, dtype, attention implementation,
`trust_remote_code` and 4/8-bit quantization of TRL's `ModelConfig` (the policy's), or the same options under the
labeler's and splitter's own `FeedbackConfig` fields. A name `"<prefix>:<name>"` whose prefix an installed package
registers (entry-point group `rlaifv_trl.model_names`, see `rlaifv_trl.plugins`) is resolved by that package to a local
folder: the test bed's `builtin:` models, for example.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
)
from transformers.utils import is_bitsandbytes_available
from trl import ModelConfig, get_quantization_config

from .compatibility import check_vision_language_model
from .plugins import MODEL_NAMES, registered_function


# Weight files `from_pretrained` does not read when a repository has safetensors ones.
_OTHER_WEIGHT_FORMATS = ["*.bin", "*.pt", "*.pth", "*.h5", "*.msgpack", "*.ckpt", "*.gguf", "*.onnx", "*.ot"]


@dataclass(frozen=True)
class ModelLoading:
    """How a model is loaded with `from_pretrained`: the loading options of TRL's `ModelConfig`.

    Args:
        revision: Branch, tag or commit of a Hub repository (ignored for local folders).
        dtype: `"auto"`, `"bfloat16"`, `"float16"` or `"float32"`.
        attn_implementation: e.g. `"sdpa"`, `"eager"`, `"flash_attention_2"`; `None` keeps the model's default.
        trust_remote_code: Allow the repository to run its own code.
        load_in_4bit: Quantize to 4 bits with bitsandbytes (compute in `dtype`).
        load_in_8bit: Quantize to 8 bits with bitsandbytes.
        bnb_4bit_quant_type: `"nf4"` or `"fp4"`.
        use_bnb_nested_quant: Quantize the 4-bit quantization constants too.
        bnb_4bit_quant_storage: Storage dtype of 4-bit weights.
    """

    revision: str | None = "main"
    dtype: str | None = "float32"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    use_bnb_nested_quant: bool = False
    bnb_4bit_quant_storage: str | None = None

    @classmethod
    def from_model_config(cls, model_args: ModelConfig, trust_remote_code: bool = False) -> ModelLoading:
        """The policy's loading options, as TRL's scripts read them (`trust_remote_code` is a training argument)."""
        names = {field.name for field in dataclasses.fields(cls)} - {"revision", "trust_remote_code"}
        options = {name: getattr(model_args, name) for name in names}
        return cls(revision=model_args.model_revision, trust_remote_code=trust_remote_code, **options)

    @classmethod
    def from_prefixed(cls, config: Any, prefix: str) -> ModelLoading:
        """Options read from `<prefix>model_revision`, `<prefix>dtype`, ... fields of a config (those it has)."""
        options = {"revision": getattr(config, f"{prefix}model_revision", "main")}
        for field in dataclasses.fields(cls):
            if hasattr(config, prefix + field.name):
                options[field.name] = getattr(config, prefix + field.name)
        return cls(**options)

    @property
    def quantized(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit

    def check(self) -> None:
        """Refuse, before any long work, options that cannot work here."""
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("Choose one of 4-bit and 8-bit quantization, not both")
        if self.quantized and not is_bitsandbytes_available():
            raise ImportError(
                "4/8-bit quantization needs bitsandbytes: `pip install bitsandbytes` (or `rlaifv-trl[quantization]`)"
            )

    def quantization_config(self):
        """The `BitsAndBytesConfig` of these options (TRL's `get_quantization_config`), or `None`."""
        options = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        del options["revision"], options["trust_remote_code"], options["attn_implementation"]
        return get_quantization_config(ModelConfig(**options))

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `from_pretrained` for the model (quantized models are placed on this process's
        device by a device map, as TRL's scripts do)."""
        kwargs: dict[str, Any] = {"revision": self.revision, "trust_remote_code": self.trust_remote_code}
        if self.dtype is not None:
            kwargs["dtype"] = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        if self.attn_implementation is not None:
            kwargs["attn_implementation"] = self.attn_implementation
        quantization = self.quantization_config()
        if quantization is not None:
            kwargs["quantization_config"] = quantization
            kwargs["device_map"] = kbit_device_map()
        return kwargs

    def locate(self, name: str | os.PathLike) -> str:
        """Where to load `name` from: a built-in model's cache folder; a Hub repository at a revision other than
        `main` as its snapshot at that revision (downloaded once, so the run keeps that commit even if the branch
        moves, and code that ignores revisions reads the right files: TRL 1.16 picks the model class from the
        config of `main`); anything else as it is."""
        name = resolve_model_name(name)
        if self.revision in (None, "main") or os.path.isdir(name):
            return name
        from huggingface_hub import list_repo_files, snapshot_download

        files = list_repo_files(name, revision=self.revision)
        skip = _OTHER_WEIGHT_FORMATS if any(file.endswith(".safetensors") for file in files) else None
        return snapshot_download(name, revision=self.revision, ignore_patterns=skip)

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `AutoProcessor` / `AutoTokenizer.from_pretrained`."""
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code}


def vllm_loading_check(loading: ModelLoading, prefix: str = "") -> None:
    """Refuse loading options a vLLM engine would not honour: bitsandbytes quantization (vLLM serves pre-quantized
    checkpoints, or takes `quantization` in `vllm_engine_kwargs`) and the attention implementation (vLLM picks its
    own kernels)."""
    if loading.quantized:
        raise ValueError(
            f"{prefix}load_in_4bit / {prefix}load_in_8bit quantize with bitsandbytes in transformers; a vllm backend "
            "cannot honour them: serve a quantized checkpoint or set vllm_engine_kwargs={'quantization': ...}"
        )
    if loading.attn_implementation is not None:
        raise ValueError(
            f"{prefix}attn_implementation={loading.attn_implementation!r} applies to transformers only; vLLM picks "
            "its own attention kernels: unset it for a vllm backend"
        )


def kbit_device_map() -> dict[str, Any]:
    """The whole quantized model on this process's device (what TRL's former `get_kbit_device_map` returned)."""
    device = PartialState().device
    return {"": device.index if device.type == "cuda" and device.index is not None else str(device)}


def model_name_resolver(name: str | os.PathLike | None) -> Callable[[str], str | os.PathLike] | None:
    """The function an installed package registers for the prefix of `name` (`"<prefix>:<name>"`), else `None`."""
    prefix, sep, _ = str(name).partition(":") if name is not None else ("", "", "")
    if not sep or not prefix.isidentifier():
        return None
    return registered_function(MODEL_NAMES, prefix)


def is_registered_model_name(name: str | os.PathLike | None) -> bool:
    """Whether `name` is resolved by an installed package (e.g. the test bed's `"builtin:<name>"`)."""
    return model_name_resolver(name) is not None


def resolve_model_name(name: str | os.PathLike) -> str:
    """`name` itself, or for a name an installed package registers, the local folder it resolves to."""
    resolver = model_name_resolver(name)
    return str(name) if resolver is None else str(resolver(str(name)))


def copy_custom_code(source: str | os.PathLike, target: str | os.PathLike) -> list[str]:
    """Copy the code files of a model that ships its own classes (`auto_map` in its config) from its folder to the
    folder a trained copy was saved in, which `save_pretrained` leaves without them. Returns the files copied."""
    config = Path(source) / "config.json"
    if not config.is_file() or not json.loads(config.read_text(encoding="utf-8")).get("auto_map"):
        return []
    copied = []
    for code in sorted(Path(source).glob("*.py")):
        if not (Path(target) / code.name).exists():
            shutil.copy2(code, Path(target) / code.name)
            copied.append(code.name)
    return copied


def load_vlm(
    name: str | os.PathLike, loading: ModelLoading | None = None, role: str = "policy"
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A vision-language model and its processor, on this process's device, in eval mode. A family the project
    cannot use (no chat template, no image placeholder, ...) raises here, naming what is missing."""
    model, processor = _load(name, loading or ModelLoading(), AutoModelForImageTextToText, AutoProcessor)
    check_vision_language_model(model, processor, role)
    return model, processor


def load_causal_lm(
    name: str | os.PathLike, loading: ModelLoading | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal language model and its tokenizer, on this process's device, in eval mode."""
    return _load(name, loading or ModelLoading(), AutoModelForCausalLM, AutoTokenizer)


def _load(name: str | os.PathLike, loading: ModelLoading, model_class, processor_class):
    path = loading.locate(name)
    kwargs = loading.model_kwargs()
    model = model_class.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs:
        model.to(PartialState().device)
    return model.eval(), processor_class.from_pretrained(path, **loading.processor_kwargs())
