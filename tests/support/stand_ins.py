"""Tiny stand-ins of real models, for tests that run shipped configs end to end."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_trl.feedback import YesNoLabeler, with_instruction
from rlaifv_trl.feedback.config import DEFAULT_YES_NO_INSTRUCTION
from rlaifv_trl.synthetic import YES_NO_WORDS, ShapesWorld


QUESTIONS = [
    with_instruction(question, DEFAULT_YES_NO_INSTRUCTION)  # as the feedback generator asks them
    for question in (
        "Is there a red circle?",
        "Is the square blue?",
        "Is it true that a cat is on it?",
        "Are there dogs?",
    )
]


def undecided_labeler(folder: str | Path, seed: int = 0) -> Path:
    """Make a randomly initialised VLM in `folder` answer yes to some questions and no to others, as a labeler.

    A random model's yes/no logits differ by much more than its input changes them, so as a labeler it accepts (or
    rejects) every claim and no preference pair can form. Here the "no" rows of the output layer become the "yes"
    rows plus a random direction orthogonal to the mean final hidden state of a few labeling prompts: the verdict
    then depends on the question and image, about half yes and half no.
    """
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    hidden = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, output: hidden.append(args[0][:, -1].detach()))
    world, labeler = ShapesWorld(), YesNoLabeler(model, processor)
    for scene_seed in range(4):
        for question in QUESTIONS:  # plain forwards: the head sees the answer position only
            labeler.full_forward([world.scene(scene_seed).render()], question)
    handle.remove()
    states = torch.cat(hidden).float()
    mean = states.mean(0)
    direction = torch.randn(states.shape[1], generator=torch.Generator().manual_seed(seed))
    direction -= (direction @ mean) / (mean @ mean) * mean
    direction *= 4.0 / ((states - mean) @ direction).std().clamp(min=1e-6)  # logit gaps of a few units
    tokenizer = processor.tokenizer
    with torch.no_grad():
        for yes, no in zip(YES_NO_WORDS[::2], YES_NO_WORDS[1::2]):
            yes_id, no_id = (tokenizer.convert_tokens_to_ids(word) for word in (yes, no))
            head.weight[no_id] = head.weight[yes_id] + direction.to(head.weight.dtype)
    model.save_pretrained(folder)
    return Path(folder)
