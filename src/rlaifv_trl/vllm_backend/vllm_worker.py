"""A vLLM engine in its own process, driven by `rlaifv_trl.vllm_backend.vllm_engine.VLLMEngine` over JSON lines.

This file is run as a script by a Python that has vLLM (the project's own environment on GPU machines, or the one
`scripts/make_vllm_env.sh` builds for vLLM's CPU build): it imports only the standard library, Pillow and vLLM, never
the project, so its transformers may differ from the project's.

Protocol: one JSON object per line on standard input, one answer per line on the file descriptor given by
`--reply-fd` (vLLM's own output goes to standard error). The first message is `{"op": "start", "engine": {...}}`
(keyword arguments of `vllm.LLM`); then
- `{"op": "generate", "images": [base64 PNG, ...], "requests": [{"prompt", "image_ids", "sampling"}, ...]}`:
  the texts of each request's completions (`sampling` holds `vllm.SamplingParams` fields, `n` and `seed` among them);
- `{"op": "next_token_probabilities", "images": [...], "requests": [{"prompt", "image_ids"}, ...], "token_ids":
  [[...], ...], "logprobs": k}`: for every request, the probability of the first generated token being each listed
  token (sums over each inner list). `k = null` (default) reads exactly the listed tokens' log-probabilities
  (`SamplingParams.logprob_token_ids`: a gather from the full log-softmax, the vocabulary never leaves the model
  runner); `k >= 1` reads the first token's top-k log-probabilities, `k = -1` the whole vocabulary (the engine needs
  `max_logprobs` at least k), and a token outside the top k then counts as probability 0;
- `{"op": "stop"}`.
Prompts are token-free texts rendered with the model's chat template; they are tokenized without adding special
tokens, as the transformers backend does. Every answer is `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import math
import os
import sys
import traceback


def _images(encoded: list[str]) -> list:
    from PIL import Image

    return [Image.open(io.BytesIO(base64.b64decode(item))).convert("RGB") for item in encoded]


def _prompts(message: dict) -> list[dict]:
    """vLLM prompts; each image carries the SHA-256 of its PNG as its identifier, so that vLLM does not hash its
    pixels again for every request that shows it (its multimodal caches key on the identifier)."""
    encoded = message.get("images", [])
    images = _images(encoded)
    digests = [hashlib.sha256(item.encode("ascii")).hexdigest() for item in encoded]
    prompts = []
    for request in message["requests"]:
        prompt = {"prompt": request["prompt"]}
        ids = request.get("image_ids", [])
        if ids:
            own = [images[i] for i in ids]
            prompt["multi_modal_data"] = {"image": own if len(own) > 1 else own[0]}
            prompt["multi_modal_uuids"] = {"image": [digests[i] for i in ids]}
        prompts.append(prompt)
    return prompts


class Worker:
    def __init__(self, engine_args: dict):
        from vllm import LLM
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vLLM 0.32 on CPUs: a seeded request whose prompt is prefilled in chunks fails ("CPU Generator does not
            # use offset": rewinding a generator is a CUDA-only call), so prompts are prefilled whole.
            engine_args.setdefault("enable_chunked_prefill", False)
        self.llm = LLM(**engine_args)
        self.tokenization = {"add_special_tokens": False}

    def generate(self, message: dict) -> dict:
        from vllm import SamplingParams

        params = [SamplingParams(**request["sampling"]) for request in message["requests"]]
        outputs = self.llm.generate(_prompts(message), params, use_tqdm=False, tokenization_kwargs=self.tokenization)
        return {"outputs": [[completion.text for completion in output.outputs] for output in outputs]}

    def next_token_probabilities(self, message: dict) -> dict:
        from vllm import SamplingParams

        groups = message["token_ids"]
        k = message.get("logprobs")
        if k is None:
            wanted = sorted({i for group in groups for i in group})
            params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=wanted)
        else:
            params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=k)
        outputs = self.llm.generate(_prompts(message), params, use_tqdm=False, tokenization_kwargs=self.tokenization)
        probabilities = []
        for output in outputs:
            top = output.outputs[0].logprobs[0]  # token id -> Logprob of the first generated position
            probabilities.append([sum(math.exp(top[i].logprob) for i in group if i in top) for group in groups])
        return {"probabilities": probabilities}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reply-fd", type=int, required=True)
    options = parser.parse_args()
    replies = os.fdopen(options.reply_fd, "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever vLLM prints goes to standard error

    def reply(answer: dict) -> None:
        replies.write(json.dumps(answer) + "\n")

    worker = None
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        op = message.get("op")
        try:
            if op == "stop":
                reply({"ok": True})
                break
            if op == "start":
                worker = Worker(message["engine"])
                import vllm

                reply({"ok": True, "vllm_version": vllm.__version__})
                continue
            if worker is None:
                raise RuntimeError("the engine has not been started")
            if op not in ("generate", "next_token_probabilities"):
                raise ValueError(f"unknown operation {op!r}")
            reply({"ok": True, **getattr(worker, op)(message)})
        except Exception as error:  # reported to the caller, which raises it
            traceback.print_exc()
            reply({"ok": False, "error": f"{type(error).__name__}: {error}"})
            if op == "start":
                break


if __name__ == "__main__":
    main()
