"""Training a base policy on ShapesWorld with TRL's SFTTrainer, and evaluating its hallucination."""

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import build_tiny_vlm, description_dataset, evaluate_hallucination, train_base_policy
from rlaifv_trl.generation import encode


def _description_nll(model, processor, dataset) -> float:
    """Mean negative log-likelihood of the reference descriptions' tokens."""
    texts = [
        processor.apply_chat_template(p + c, tokenize=False) for p, c in zip(dataset["prompt"], dataset["completion"])
    ]
    prompts = [processor.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in dataset["prompt"]]
    inputs = encode(processor, texts, dataset["images"], model.device)
    prompt_lengths = [len(processor(text=[t], images=i)["input_ids"][0]) for t, i in zip(prompts, dataset["images"])]
    with torch.no_grad():
        logps = model(**inputs).logits[:, :-1].log_softmax(-1)
    targets = inputs["input_ids"][:, 1:]
    token_logps = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = torch.zeros_like(targets, dtype=torch.bool)
    pad = (inputs["attention_mask"] == 0).sum(1)
    for row, (start, left) in enumerate(zip(prompt_lengths, pad.tolist())):
        mask[row, left + start - 1 :] = True
    return float(-(token_logps[mask]).mean())


def test_sft_teaches_descriptions_and_saves_a_loadable_policy(tmp_path):
    base = build_tiny_vlm(tmp_path / "base", "llava", "tiny", seed=0)
    trained = train_base_policy(base, tmp_path / "policy", num_steps=40, batch_size=16, num_scenes=320, seed=0)
    held_out = description_dataset(16, start_seed=50_000)

    before = AutoModelForImageTextToText.from_pretrained(base)
    after = AutoModelForImageTextToText.from_pretrained(trained)
    processor = AutoProcessor.from_pretrained(trained)
    nll_before = _description_nll(before, processor, held_out)
    nll_after = _description_nll(after, processor, held_out)
    assert nll_after < 0.75 * nll_before

    result = evaluate_hallucination(after, processor, num_scenes=8, temperature=None, max_new_tokens=24)
    assert result.num_answers == 8
    assert 0.0 <= result.response_rate <= 1.0 and 0.0 <= result.recall <= 1.0
