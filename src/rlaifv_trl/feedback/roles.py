"""Which vision-language models play the policy and the labeler of a feedback run, and how each is held.

A model on the transformers backend is loaded (or checked, when given as an object); a model on the vllm backend is
given by name or folder and only its processor is loaded here (chat template, prompt checks): vLLM loads the weights.
Without a labeler of its own, the policy labels its own claims (self-feedback).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from transformers import AutoConfig, AutoProcessor, PreTrainedModel, ProcessorMixin

from ..cards import public_name
from ..compatibility import check_vision_language_model
from ..loading import ModelLoading, load_vlm
from .config import FeedbackConfig


@dataclass
class VisionModel:
    """A vision-language model in one role.

    Attributes:
        given: The model as given: an object, a Hub id or a folder.
        model: The loaded model; `None` when vLLM serves it.
        processor: Its processor.
        loading: How it is loaded (revision, dtype, quantization, ...).
        name: How the provenance columns name it (never a local path).
    """

    given: PreTrainedModel | str | os.PathLike
    model: PreTrainedModel | None
    processor: ProcessorMixin
    loading: ModelLoading
    name: str


def model_id(model: PreTrainedModel) -> str:
    """A name for a model in the provenance columns: its Hub id, "local: <folder>" for a local path, else its class.

    Provenance columns are published with the data, so they never hold local paths.
    """
    name = getattr(model.config, "_name_or_path", "")
    return public_name(name) if name else type(model).__name__


def feedback_models(
    args: FeedbackConfig,
    model: PreTrainedModel | str | os.PathLike,
    processor: ProcessorMixin | None,
    labeler_model: PreTrainedModel | str | os.PathLike | None,
    labeler_processor: ProcessorMixin | None,
    policy_loading: ModelLoading,
) -> tuple[VisionModel, VisionModel]:
    """The policy and the labeler: `labeler_model`, else `args.labeler_model_name_or_path`, else the policy."""
    labeler_model = labeler_model or args.labeler_model_name_or_path
    self_feedback = labeler_model is None or labeler_model is model
    loaded = args.sampling_backend == "transformers" or (self_feedback and args.labeler_backend == "transformers")
    policy = vision_model(model, processor, "policy", policy_loading, loaded, "sampling_backend")
    if self_feedback:
        return policy, VisionModel(
            model, policy.model, labeler_processor or policy.processor, policy_loading, policy.name
        )
    loaded = args.labeler_backend == "transformers"
    labeler = vision_model(
        labeler_model, labeler_processor, "labeler", args.labeler_loading, loaded, "labeler_backend"
    )
    return policy, labeler


def vision_model(
    model: PreTrainedModel | str | os.PathLike,
    processor: ProcessorMixin | None,
    role: str,
    loading: ModelLoading,
    loaded: bool,
    backend: str,
) -> VisionModel:
    """The model of `role`: loaded (or checked, when given as an object), or only its processor when vLLM serves it
    (set by the config field `backend`)."""
    if not loaded:
        require_model_name(model, role, backend)
        path, own_processor = vlm_processor(model, loading, role)
        return VisionModel(model, None, processor or own_processor, loading, public_name(path))
    if isinstance(model, (str, os.PathLike)):
        loaded_model, own_processor = load_vlm(model, loading, role)
        processor = processor or own_processor
    elif processor is None:
        raise ValueError(f"Pass the {role}'s processor along with its model object")
    else:
        loaded_model = model
        check_vision_language_model(model, processor, role)
    return VisionModel(model, loaded_model.eval(), processor, loading, model_id(loaded_model))


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
