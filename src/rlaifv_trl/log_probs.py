"""Answer log-probabilities and the length-normalized implicit reward of a DPO-trained model.

RLAIF-V reads a DPO-trained policy as a reward model: r(y) = beta * log(pi(y) / pi_ref(y)), normalized by the
number of answer tokens T so that it does not favour short answers:

    r(y) = beta / T * sum_t [log pi(y_t | ...) - log pi_ref(y_t | ...)]

`length_normalized_reward` is the one place this formula lives: `RLAIFVDPOTrainer` logs it on every batch and
`LengthNormalizedRewardScorer` ranks answers with it. The token positions scored are the same in both: the answer as
the chat template renders it after the prompt (end-of-turn tokens included), as TRL's DPO collators mark it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from accelerate.utils import is_peft_model


# Keys of a collated preference batch that are not model inputs.
NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps"})


def token_log_probs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each token under the logits that predict it (same leading shape, float32): TRL's
    `selective_log_softmax` on the logits in float32 (its half-precision path would round the log-softmax), as one
    block (it loops over the first dimension, which here may be the answer's positions)."""
    from trl.trainer.utils import selective_log_softmax

    return selective_log_softmax(logits.float()[None], token_ids[None])[0]


@torch.no_grad()
def completion_log_probs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token log-probabilities of the completion tokens of a collated batch.

    Args:
        model: A vision-language (or causal) language model.
        inputs: A batch from TRL's preference collators: model inputs plus `completion_mask`.

    Returns:
        A `(batch, seq_len - 1)` float32 tensor in TRL's layout: position t holds log p(token t+1), zero where token
        t+1 is not a completion token. Only the logits of the completion region are materialized.
    """
    input_ids, completion_mask = inputs["input_ids"], inputs["completion_mask"]
    rows, length = input_ids.shape
    output = torch.zeros((rows, length - 1), dtype=torch.float32, device=input_ids.device)
    has_completion = completion_mask.any(dim=0).nonzero()
    if len(has_completion) == 0:
        return output
    start = max(int(has_completion[0]), 1)  # first column holding a completion token
    model_inputs = {key: value for key, value in inputs.items() if key not in NON_MODEL_KEYS}
    keep = length - start + 1
    # Sliced again for models whose forward ignores `logits_to_keep` (MiniCPM-V 4.6 in transformers 5.24).
    logits = model(**model_inputs, use_cache=False, logits_to_keep=keep).logits[:, -keep:-1]
    for row in range(rows):  # one row at a time bounds the float32 copy of the logits
        logps = token_log_probs(logits[row], input_ids[row, start:])
        output[row, start - 1 :] = logps * completion_mask[row, start:]
    return output


def length_normalized_reward(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    num_tokens: torch.Tensor,
    beta: float,
    length_normalize: bool = True,
) -> torch.Tensor:
    """The implicit reward beta * (log pi(y) - log pi_ref(y)), divided by the answer length T when `length_normalize`.

    Args:
        policy_logps: Summed log-probabilities of each answer under the policy.
        ref_logps: Summed log-probabilities of each answer under the reference.
        num_tokens: Number of answer tokens T of each answer (at least 1 when normalizing).
        beta: The DPO beta the policy was trained with.
        length_normalize: Divide by T (RLAIF-V) or not (the plain DPO implicit reward).
    """
    reward = beta * (policy_logps.float() - ref_logps.float())
    return reward / num_tokens.to(reward.dtype) if length_normalize else reward


@contextlib.contextmanager
def reference_context(model: torch.nn.Module) -> Iterator[None]:
    """Within this context a PEFT model acts as its own reference; other models are left as they are.

    The reference of a PEFT model is its frozen "ref" adapter when it has one (a pretrained adapter trained further,
    as `trl.DPOTrainer` sets it up), else the base model with every adapter disabled.
    """
    if not is_peft_model(model):
        yield
        return
    from trl.trainer.utils import use_adapter

    with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
        yield
