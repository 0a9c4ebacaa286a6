"""A vLLM engine for one model, in a worker process that ends when the engine is closed.

The engine runs `vllm_worker.py` with a Python that has vLLM: `VLLMSettings.python`, else the `RLAIFV_VLLM_PYTHON`
environment variable, else this Python when vLLM is installed here. Running it in its own process lets vLLM's CPU
build keep its own torch and transformers, and frees every byte of its memory (GPU memory included) when it is
closed: the feedback stages open an engine, use it, and close it before training starts.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .vllm_checkpoint import vllm_loadable


logger = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("vllm_worker.py")
# No usage reports leave the machine.
_PRIVATE_ENV = {"VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}
# The launcher's process group (torchrun, accelerate launch): an engine is a world of its own, whose processes vLLM
# ranks itself, and must not take the rank of the process that started it.
_LAUNCHER_ENV = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
    "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
)  # fmt: skip


@dataclass
class VLLMSettings:
    """How vLLM engines are started (the `vllm_*` fields of `FeedbackConfig`).

    Args:
        python: Python interpreter that has vLLM; `None`: `RLAIFV_VLLM_PYTHON`, else this one.
        gpu_memory_utilization: Share of each GPU's memory the engine may take (weights, activations, KV cache).
        tensor_parallel_size: GPUs one engine spans (a 34B labeler on several GPUs); vLLM starts one process per
            GPU.
        data_parallel_size: Engine replicas (vLLM's data parallelism).
        max_model_len: Longest sequence (prompt + output); `None`: the model's own limit.
        dtype: Weights' dtype (`"auto"`, `"bfloat16"`, `"float16"`, `"float32"`).
        enable_prefix_caching: Reuse the KV cache of shared prompt prefixes (the image of a prompt's candidates, of a
            group's questions).
        engine_kwargs: Further keyword arguments of `vllm.LLM`.
    """

    python: str | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    dtype: str = "auto"
    enable_prefix_caching: bool = True
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


def vllm_python(configured: str | None = None) -> str:
    """The Python interpreter that runs vLLM, or an `ImportError` saying how to get one."""
    python = configured or os.environ.get("RLAIFV_VLLM_PYTHON")
    if python:
        if not os.access(python, os.X_OK):
            raise FileNotFoundError(f"The Python for vLLM ({python}) does not exist or is not executable")
        return python
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    raise ImportError(
        "A vllm backend needs vLLM: `pip install vllm` (GPU), or build its own environment with "
        "`scripts/make_vllm_env.sh` (vLLM's CPU build) and set `vllm_python` (or RLAIFV_VLLM_PYTHON) to its Python"
    )


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an engine's worker: this process's, without the launcher's process group, with `extra`."""
    own = {key: value for key, value in os.environ.items() if key not in _LAUNCHER_ENV}
    return {**own, **(extra or {}), **_PRIVATE_ENV}


def encode_image(image: Image.Image) -> str:
    """An image as base64 PNG (lossless: vLLM sees the pixels the transformers backend sees)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class VLLMEngineError(RuntimeError):
    """The engine could not start or its worker stopped: nothing more can run on it."""


class VLLMEngine:
    """One model served by vLLM in a worker process.

    Args:
        model: Name or folder of the model.
        settings: How the engine is started.
        revision: Revision of a Hub model.
        trust_remote_code: Allow the model repository to run its own code.
        max_images: Images one prompt may hold (`engine_kwargs={"limit_mm_per_prompt": ...}` overrides it).
        seed: The engine's seed (each request carries its own seed as well).
        env: Environment variables of the worker beside this process's (e.g. `CUDA_VISIBLE_DEVICES`).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        settings: VLLMSettings | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        max_images: int = 1,
        seed: int = 0,
        env: dict[str, str] | None = None,
    ):
        self.settings = settings or VLLMSettings()
        self._scratch = tempfile.TemporaryDirectory(prefix="rlaifv-vllm-")
        self.model = vllm_loadable(model, Path(self._scratch.name) / "converted")
        self._log_path = Path(self._scratch.name) / "worker.log"
        engine = {
            "model": self.model,
            "dtype": self.settings.dtype,
            "gpu_memory_utilization": self.settings.gpu_memory_utilization,
            "tensor_parallel_size": self.settings.tensor_parallel_size,
            "enable_prefix_caching": self.settings.enable_prefix_caching,
            "trust_remote_code": trust_remote_code,
            "seed": seed,
            # Log-probabilities of the full softmax, before any sampling setting (vLLM's default, pinned: the labeler
            # reads p(yes)/p(no) from them). `max_logprobs` stays vLLM's 20: the labeler asks for its tokens by id.
            "logprobs_mode": "raw_logprobs",
            "limit_mm_per_prompt": {"image": max_images, "video": 0},
        }
        if self.settings.data_parallel_size != 1:
            engine["data_parallel_size"] = self.settings.data_parallel_size
        if self.settings.max_model_len is not None:
            engine["max_model_len"] = self.settings.max_model_len
        if revision not in (None, "main") and not os.path.isdir(self.model):
            engine["revision"] = revision
        engine.update(self.settings.engine_kwargs)
        read_end, write_end = os.pipe()
        self._log = open(self._log_path, "w")
        self._process = subprocess.Popen(
            [vllm_python(self.settings.python), str(WORKER), "--reply-fd", str(write_end)],
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=self._log,
            pass_fds=(write_end,),
            env=worker_env(env),
            text=True,
        )
        os.close(write_end)
        self._replies = os.fdopen(read_end)
        logger.info("Starting a vLLM engine for %s", model)
        try:
            self.vllm_version = self._ask({"op": "start", "engine": engine})["vllm_version"]
        except Exception as error:
            self.close()
            raise VLLMEngineError(f"vLLM could not start an engine for {model}: {error}") from None

    def _ask(self, message: dict) -> dict:
        if self._process.poll() is not None:
            raise VLLMEngineError(f"The vLLM worker has stopped (exit code {self._process.returncode})")
        try:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
            line = self._replies.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise VLLMEngineError(f"The vLLM worker for {self.model} stopped. Its last output:\n{self._log_tail()}")
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise RuntimeError(f"vLLM ({self.model}): {answer['error']}\n{self._log_tail()}")
        return answer

    def _log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    @staticmethod
    def _message(
        op: str, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]] | None
    ) -> tuple[dict, list[dict]]:
        """A message holding each distinct image once, and its requests referring to them."""
        table: dict[int, int] = {}
        encoded: list[str] = []
        requests = []
        for i, prompt in enumerate(prompts):
            ids = []
            for image in images[i] if images is not None else ():
                if id(image) not in table:
                    table[id(image)] = len(encoded)
                    encoded.append(encode_image(image))
                ids.append(table[id(image)])
            requests.append({"prompt": prompt, "image_ids": ids})
        return {"op": op, "images": encoded, "requests": requests}, requests

    def generate(
        self,
        prompts: Sequence[str],
        images: Sequence[Sequence[Image.Image]] | None,
        sampling: Sequence[dict[str, Any]],
    ) -> list[list[str]]:
        """The completions of each rendered prompt, with its images and `vllm.SamplingParams` fields."""
        message, requests = self._message("generate", prompts, images)
        for request, params in zip(requests, sampling, strict=True):
            request["sampling"] = params
        return self._ask(message)["outputs"]

    def next_token_probabilities(
        self,
        prompts: Sequence[str],
        images: Sequence[Sequence[Image.Image]] | None,
        token_ids: Sequence[Sequence[int]],
        logprobs: int | None = None,
    ) -> list[list[float]]:
        """For each prompt, the probability that the next token is in each group of `token_ids` (summed over the
        group): from those tokens' own log-probabilities (`logprobs=None`), or from the top-`logprobs`
        log-probabilities of the first generated token (-1: the whole vocabulary; the engine then needs
        `engine_kwargs={"max_logprobs": -1}`), where a token outside the top k counts as 0."""
        message, _ = self._message("next_token_probabilities", prompts, images)
        message["token_ids"] = [list(group) for group in token_ids]
        message["logprobs"] = logprobs
        return self._ask(message)["probabilities"]

    def close(self) -> None:
        """Stop the worker and free its memory."""
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            try:
                self._process.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self._process.stdin.flush()
                process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired, OSError):
                process.kill()
                process.wait()
        if getattr(self, "_log", None) is not None and not self._log.closed:
            self._log.close()
        if getattr(self, "_replies", None) is not None:
            self._replies.close()
        self._scratch.cleanup()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
