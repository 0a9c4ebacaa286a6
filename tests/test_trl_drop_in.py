"""Drop-in: the project's trainers train exactly as TRL's on every row format TRL trains on.

`RLAIFVDPOTrainer` against `trl.DPOTrainer`, and `GRPORankTrainer` against `trl.GRPOTrainer` where their advantages
coincide: same model, same rows, same settings, one batch; the loss and every gradient must be equal. The intended
differences are listed in docs/trl_compatibility.md.
"""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, set_seed
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer

from rlaifv_testbed import prompt_dataset
from rlaifv_trl import GRPORankConfig, GRPORankTrainer, RLAIFVDPOConfig, RLAIFVDPOTrainer
from rlaifv_trl.trainer.rank_advantages import dcg_gain


pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILIES = ("llava", "qwen2_vl", "qwen2_5_vl")


def image(color: str) -> Image.Image:
    return Image.new("RGB", (32, 32), color)


def user(content):
    return [{"role": "user", "content": content}]


def assistant(content):
    return [{"role": "assistant", "content": content}]


def parts(text: str, num_images: int = 0) -> list[dict]:
    return [{"type": "image"}] * num_images + [{"type": "text", "text": text}]


def dpo_formats(image_token: str) -> dict[str, dict[str, list]]:
    """Two rows in each format TRL documents for DPO (text: standard and conversational, explicit and implicit
    prompt; vision: placeholders or plain string content, one or two images, an `image` column, text-only rows mixed
    in, TRL's standard format with the image token in the prompt, an assistant prefill)."""
    red, blue, green = image("red"), image("blue"), image("green")
    return {
        "text standard": {
            "prompt": ["What is red?", "Name a shape."],
            "chosen": [" A square.", " A circle."],
            "rejected": [" A dog.", " A cat."],
        },
        "text standard, implicit prompt": {
            "chosen": ["What is red? A square.", "Name a shape. A circle."],
            "rejected": ["What is red? A dog.", "Name a shape. A cat."],
        },
        "text conversational": {
            "prompt": [user("What is red?"), user("Name a shape.")],
            "chosen": [assistant("A square."), assistant("A circle.")],
            "rejected": [assistant("A dog."), assistant("A cat.")],
        },
        "text conversational, implicit prompt": {
            "chosen": [user("What is red?") + assistant("A square."), user("Name a shape.") + assistant("A circle.")],
            "rejected": [user("What is red?") + assistant("A dog."), user("Name a shape.") + assistant("A cat.")],
        },
        "vision, placeholders": {
            "prompt": [user(parts("What is shown?", 1)), user(parts("Describe it.", 1))],
            "images": [[red], [blue]],
            "chosen": [assistant(parts("A red square.")), assistant(parts("A blue one."))],
            "rejected": [assistant(parts("A dog.")), assistant(parts("A cat."))],
        },
        "vision, string content": {
            "prompt": [user("What is shown?"), user("Describe it.")],
            "images": [[red], [blue]],
            "chosen": [assistant("A red square."), assistant("A blue one.")],
            "rejected": [assistant("A dog."), assistant("A cat.")],
        },
        "vision, two images, placeholders": {
            "prompt": [user(parts("Compare them.", 2)), user(parts("Which differs?", 2))],
            "images": [[red, green], [blue, red]],
            "chosen": [assistant(parts("Red and green.")), assistant(parts("The blue one."))],
            "rejected": [assistant(parts("Two dogs.")), assistant(parts("None."))],
        },
        "vision, two images, string content": {
            "prompt": [user("Compare them."), user("Which differs?")],
            "images": [[red, green], [blue, red]],
            "chosen": [assistant("Red and green."), assistant("The blue one.")],
            "rejected": [assistant("Two dogs."), assistant("None.")],
        },
        "vision, image column": {
            "prompt": [user(parts("What is shown?", 1)), user(parts("Describe it.", 1))],
            "image": [red, blue],
            "chosen": [assistant(parts("A red square.")), assistant(parts("A blue one."))],
            "rejected": [assistant(parts("A dog.")), assistant(parts("A cat."))],
        },
        "vision, text-only rows mixed in": {
            "prompt": [user(parts("What is shown?", 1)), user(parts("Name a shape."))],
            "images": [[red], []],
            "chosen": [assistant(parts("A red square.")), assistant(parts("A circle."))],
            "rejected": [assistant(parts("A dog.")), assistant(parts("A cat."))],
        },
        "vision standard, image token in the prompt": {
            "prompt": [f"{image_token}What is shown?", f"{image_token}Describe it."],
            "images": [[red], [blue]],
            "chosen": [" A red square.", " A blue one."],
            "rejected": [" A dog.", " A cat."],
        },
        "vision, assistant prefill": {
            "prompt": [
                user(parts("What is shown?", 1)) + assistant(parts("It is")),
                user(parts("Describe it.", 1)) + assistant(parts("I see")),
            ],
            "images": [[red], [blue]],
            "chosen": [assistant(parts(" a red square.")), assistant(parts(" a blue one."))],
            "rejected": [assistant(parts(" a dog.")), assistant(parts(" a cat."))],
        },
    }


FORMATS = list(dpo_formats("<image>"))
SETTINGS = {
    "use_cpu": True, "bf16": False, "report_to": "none", "per_device_train_batch_size": 2, "max_steps": 1,
    "save_strategy": "no", "disable_tqdm": True, "max_length": None, "learning_rate": 1e-3, "seed": 0,
    "lr_scheduler_type": "linear", "warmup_steps": 0, "weight_decay": 0.0, "num_train_epochs": 1,
}  # fmt: skip


def first_batch_loss_and_grads(trainer) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of the trainer's first training batch (its own dataset preparation and collator) and the gradients."""
    trainer.model.train()
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("row_format", FORMATS)
@pytest.mark.parametrize("family", FAMILIES)
def test_rlaifv_dpo_trainer_computes_trl_dpo_trainers_loss_and_gradients(family, row_format, tiny_vlm_dir, tmp_path):
    policy, reference = tiny_vlm_dir(family, seed=1), tiny_vlm_dir(family, seed=0)
    processor = AutoProcessor.from_pretrained(policy)
    data = Dataset.from_dict(dpo_formats(processor.image_token)[row_format])
    results = []
    for trainer_class, config_class in ((DPOTrainer, DPOConfig), (RLAIFVDPOTrainer, RLAIFVDPOConfig)):
        trainer = trainer_class(
            model=str(policy),
            ref_model=AutoModelForImageTextToText.from_pretrained(reference),
            args=config_class(str(tmp_path / trainer_class.__name__), **SETTINGS),
            train_dataset=data,
            processing_class=processor,
        )
        results.append(first_batch_loss_and_grads(trainer))
    (trl_loss, trl_grads), (our_loss, our_grads) = results
    assert math.isfinite(trl_loss.item()) and trl_grads
    assert torch.equal(trl_loss, our_loss), (trl_loss.item(), our_loss.item())
    assert trl_grads.keys() == our_grads.keys()
    for name in trl_grads:
        assert torch.equal(trl_grads[name], our_grads[name]), name


def test_a_vision_dataset_with_implicit_prompts_is_refused_naming_the_fix(tiny_vlm_dir, tmp_path):
    """TRL's vision collator needs a `prompt` column (plain `DPOTrainer` fails with a KeyError on the first batch)."""
    rows = dpo_formats("<image>")["vision, placeholders"]
    data = Dataset.from_dict(
        {
            "images": rows["images"],
            "chosen": [p + c for p, c in zip(rows["prompt"], rows["chosen"])],
            "rejected": [p + r for p, r in zip(rows["prompt"], rows["rejected"])],
        }
    )
    with pytest.raises(ValueError, match=r"no `prompt` column.*extract_prompt"):
        RLAIFVDPOTrainer(
            model=str(tiny_vlm_dir("llava")), args=RLAIFVDPOConfig(str(tmp_path), **SETTINGS), train_dataset=data
        )


# -- GRPO_rank against GRPO ----------------------------------------------------------------------------------------

NUM_GENERATIONS = 4
GRPO_SETTINGS = {
    "use_cpu": True, "bf16": False, "report_to": "none", "save_strategy": "no", "disable_tqdm": True, "seed": 0,
    "per_device_train_batch_size": 8, "num_generations": NUM_GENERATIONS, "max_completion_length": 8,
    "max_steps": 1, "learning_rate": 1e-3, "beta": 0.04, "scale_rewards": "none",
}  # fmt: skip


def gains_of_own_ranks(prompts, completions, **kwargs) -> list[float]:
    """An oracle whose rewards are the DCG gains of the ranks it gives (longer answers first, every rank distinct):
    TRL's advantage (reward minus the group mean, unscaled) is then GRPO_rank's `"gain"` advantage."""
    texts = [completion[0]["content"] for completion in completions]
    rewards = []
    for start in range(0, len(texts), NUM_GENERATIONS):
        group = texts[start : start + NUM_GENERATIONS]
        order = sorted(range(len(group)), key=lambda i: (-len(group[i]), group[i], i))
        ranks = torch.tensor([order.index(i) for i in range(len(group))])
        rewards += dcg_gain(ranks).tolist()
    return rewards


def grpo_first_step(trainer_class, config, path, processor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss and gradients of the trainer's first step: generation, rewards and advantages included."""
    trainer = trainer_class(
        model=str(path), reward_funcs=gains_of_own_ranks, args=config, train_dataset=prompt_dataset(4),
        processing_class=processor,
    )  # fmt: skip
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # what the training loop sets before a step
    batch = next(iter(trainer.get_train_dataloader()))
    set_seed(0)  # the same samples in every trainer
    inputs = trainer._prepare_inputs(batch)
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", FAMILIES)
def test_grpo_rank_trainer_computes_grpo_trainers_step_when_the_advantages_coincide(family, tiny_vlm_dir, tmp_path):
    path = tiny_vlm_dir(family)
    processor = AutoProcessor.from_pretrained(path)
    runs = {
        "trl": (GRPOTrainer, GRPOConfig(str(tmp_path / "trl"), **GRPO_SETTINGS)),
        "rank, from a GRPOConfig": (GRPORankTrainer, GRPOConfig(str(tmp_path / "converted"), **GRPO_SETTINGS)),
        "rank": (GRPORankTrainer, GRPORankConfig(str(tmp_path / "rank"), rank_advantage="gain", **GRPO_SETTINGS)),
    }
    results = {
        name: grpo_first_step(trainer_class, config, path, processor) for name, (trainer_class, config) in runs.items()
    }
    trl_loss, trl_grads = results.pop("trl")
    assert math.isfinite(trl_loss.item()) and max(grad.abs().max().item() for grad in trl_grads.values()) > 1e-3
    for name, (loss, grads) in results.items():
        torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=0, msg=name)
        assert grads.keys() == trl_grads.keys(), name
        for parameter in grads:
            torch.testing.assert_close(grads[parameter], trl_grads[parameter], atol=1e-6, rtol=1e-5, msg=parameter)
