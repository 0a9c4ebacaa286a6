"""Tiny stand-ins of real models, for tests that run shipped configs end to end."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import YES_NO_WORDS, ShapesWorld
from rlaifv_trl.data import user_turn
from rlaifv_trl.feedback import CandidateSampler, YesNoLabeler, polar_question, split_claims, with_instruction
from rlaifv_trl.feedback.config import DEFAULT_YES_NO_INSTRUCTION


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
    rows plus a random direction orthogonal to the mean final hidden state of each image's questions, for questions
    like those a recipe asks: about the claims of the model's own sampled descriptions (gibberish from a random
    model, whose states lie far from those of sensible questions: centred on a few fixed questions, every verdict
    about them falls on the same side). The verdict then depends on the question, about half yes and half no among
    the answers to one prompt. Only its sign counts, so the direction is also orthogonal to the mean state where the
    model samples, and small there: the model samples "no" about as rarely as before, and its answers stay like
    those it was calibrated on (with "no" gaps of a few units at sampling positions they fill up with "No"s).
    """
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    world, labeler = ShapesWorld(), YesNoLabeler(model, processor)
    sampler = CandidateSampler(model, processor, num_candidates=4, temperature=1.0, max_new_tokens=16)
    hidden = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, output: hidden.append(args[0][:, -1].detach().float()))
    groups = []
    for scene_seed in range(8):  # the head sees every sampled position
        image = world.scene(scene_seed).render()
        answers = sampler.sample(user_turn("Describe the image."), [image], seed=scene_seed)
        claims = [claim for answer in answers for claim in split_claims(answer)]
        asked = [with_instruction(polar_question(claim), DEFAULT_YES_NO_INSTRUCTION) for claim in claims]
        groups.append((image, asked if len(asked) > 1 else QUESTIONS))  # fixed questions for answers without claims
    sampled = torch.cat(hidden)
    hidden.clear()
    per_image = []
    for image, questions in groups:
        for question in questions:  # plain forwards: the head sees the answer position only
            labeler.full_forward([image], question)
        per_image.append(torch.cat(hidden))
        hidden.clear()
    handle.remove()
    centres = torch.stack([states.mean(0) for states in per_image] + [sampled.mean(0)], dim=1)
    basis = torch.linalg.qr(centres).Q
    direction = torch.randn(basis.shape[0], generator=torch.Generator().manual_seed(seed))
    direction -= basis @ (basis.T @ direction)
    labeling = torch.cat([states - states.mean(0) for states in per_image]) @ direction
    sampling = (sampled - sampled.mean(0)) @ direction
    direction *= 0.5 / torch.maximum(labeling.std(), sampling.std()).clamp(min=1e-6)  # logit gaps of about 0.5
    tokenizer = processor.tokenizer
    with torch.no_grad():
        for yes, no in zip(YES_NO_WORDS[::2], YES_NO_WORDS[1::2]):
            yes_id, no_id = (tokenizer.convert_tokens_to_ids(word) for word in (yes, no))
            head.weight[no_id] = head.weight[yes_id] + direction.to(head.weight.dtype)
    model.save_pretrained(folder)
    return Path(folder)
