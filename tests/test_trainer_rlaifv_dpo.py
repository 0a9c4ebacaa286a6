"""RLAIFVDPOTrainer on tiny real VLMs: plain DPO unchanged, the logged reward, the max_length guard, LoRA, checkpointing."""

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import DPOConfig, DPOTrainer

from rlaifv_testbed import oracle_preference_dataset
from rlaifv_trl import LengthNormalizedRewardScorer, RLAIFVDPOTrainer, precompute_ref_log_probs


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Hyperparameters shared by runs that are compared with each other (RLAIFVDPOConfig's defaults differ from DPOConfig's).
SAME_HYPERPARAMETERS = {
    "learning_rate": 1e-3,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "max_length": 1024,
}


def load(path):
    return AutoModelForImageTextToText.from_pretrained(path)


def loss_and_grads(trainer, rows):
    """Loss and parameter gradients of `trainer` on one batch of `rows` built by its own collator."""
    trainer.model.train()
    inputs = trainer._prepare_inputs(trainer.data_collator([dict(row) for row in rows]))  # the collator edits rows
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.model.zero_grad()
    return loss.detach(), grads


def assert_same_grads(a, b, atol):
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=1e-4, msg=name)


def trainable_state(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_with_the_extras_off_it_trains_exactly_like_dpo_trainer(tiny_vlm_dirs, dpo_args):
    path = tiny_vlm_dirs["llava"]
    processor = AutoProcessor.from_pretrained(path)
    data = oracle_preference_dataset(4)
    plain = DPOTrainer(
        model=load(path),
        args=dpo_args(DPOConfig, **SAME_HYPERPARAMETERS),
        train_dataset=data,
        processing_class=processor,
    )
    ours = RLAIFVDPOTrainer(
        model=load(path),
        args=dpo_args(log_length_normalized_rewards=False, **SAME_HYPERPARAMETERS),
        train_dataset=data,
        processing_class=processor,
    )
    rows = data.select([0, 1])
    plain_batch, our_batch = plain.data_collator(list(rows)), ours.data_collator(list(rows))
    assert plain_batch.keys() == our_batch.keys()
    assert all(torch.equal(plain_batch[key], our_batch[key]) for key in plain_batch)
    plain_loss, plain_grads = loss_and_grads(plain, rows)
    our_loss, our_grads = loss_and_grads(ours, rows)
    assert torch.equal(plain_loss, our_loss)
    assert_same_grads(plain_grads, our_grads, atol=0)

    plain.train()
    ours.train()
    plain_params, our_params = trainable_state(plain.model), trainable_state(ours.model)
    assert all(torch.equal(plain_params[name], our_params[name]) for name in plain_params)
    assert [log["loss"] for log in plain.state.log_history[:-1]] == [
        log["loss"] for log in ours.state.log_history[:-1]
    ]


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("precompute", [False, True])
def test_logs_the_length_normalized_reward_the_scorer_computes(arch, precompute, tiny_vlm_dirs, dpo_args):
    policy, reference = tiny_vlm_dirs[f"{arch}_policy"], tiny_vlm_dirs[arch]
    processor = AutoProcessor.from_pretrained(policy)
    data = oracle_preference_dataset(3)
    trainer = RLAIFVDPOTrainer(
        model=load(policy),
        ref_model=load(reference),
        args=dpo_args(precompute_ref_log_probs=precompute, beta=0.5),
        train_dataset=data,
        processing_class=processor,
    )
    rows = trainer.train_dataset.select(range(3))
    loss_and_grads(trainer, rows)
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}

    scorer = LengthNormalizedRewardScorer(load(policy), load(reference), processor, beta=0.5)
    chosen = torch.tensor(scorer.score(rows["prompt"], rows["images"], rows["chosen"]))
    rejected = torch.tensor(scorer.score(rows["prompt"], rows["images"], rows["rejected"]))
    assert metrics["length_normalized_rewards/chosen"] == pytest.approx(chosen.mean().item(), abs=1e-5)
    assert metrics["length_normalized_rewards/rejected"] == pytest.approx(rejected.mean().item(), abs=1e-5)
    assert metrics["length_normalized_rewards/margins"] == pytest.approx((chosen - rejected).mean().item(), abs=1e-5)
    assert metrics["length_normalized_rewards/accuracies"] == pytest.approx((chosen > rejected).float().mean().item())

    tokenizer = processor.tokenizer
    chosen_tokens = [len(tokenizer(c[0]["content"][0]["text"] + "<|im_end|>\n")["input_ids"]) for c in rows["chosen"]]
    assert metrics["answer_length/chosen"] == pytest.approx(sum(chosen_tokens) / 3)
    assert metrics["answer_length/rejected"] > metrics["answer_length/chosen"]  # one more object

    trainer.log({})  # DPOTrainer.log averages `_metrics` into the logs
    assert trainer.state.log_history[-1]["length_normalized_rewards/chosen"] == pytest.approx(
        metrics["length_normalized_rewards/chosen"]
    )


def test_a_row_whose_answer_max_length_cuts_away_is_skipped_and_counted(tiny_vlm_dirs, dpo_args):
    from rlaifv_trl.validation import BadRowError, RowValidation

    path = tiny_vlm_dirs["llava"]
    processor = AutoProcessor.from_pretrained(path)
    data = oracle_preference_dataset(2, start_seed=7)
    content = [*data[0]["prompt"][0]["content"][:-1], {"type": "text", "text": "Describe the image. " * 8}]
    long_prompt = [{**data[0]["prompt"][0], "content": content}]
    data = Dataset.from_list([{**data[0], "prompt": long_prompt}, data[1]], features=data.features)
    prompt = processor.apply_chat_template(data[1]["prompt"], add_generation_prompt=True, tokenize=False)
    prompt_length = len(processor(text=[prompt], images=data[1]["images"])["input_ids"][0])
    trainer = RLAIFVDPOTrainer(
        model=load(path),
        args=dpo_args(max_length=prompt_length + 1, per_device_train_batch_size=1, max_steps=1),
        train_dataset=data,
        processing_class=processor,
    )
    report = trainer.row_validation_reports["train"]
    assert (report.num_rows, report.num_kept) == (2, 1) and len(trainer.train_dataset) == 1
    assert report.skipped[0] | {"message": None} == {
        "row": 0, "id": "shapes-7", "code": "answer.cut_by_max_length", "field": "chosen", "message": None,
    }  # fmt: skip
    trainer.train()  # the other row: one answer token left, trained on
    assert trainer.state.log_history[0]["answer_length/chosen"] == 1
    with pytest.raises(BadRowError, match=r"row 0 \(id 'shapes-7'\) is unusable \[answer.cut_by_max_length\]"):
        RLAIFVDPOTrainer(
            model=load(path),
            args=dpo_args(max_length=prompt_length + 1, per_device_train_batch_size=1, max_steps=1),
            train_dataset=data,
            processing_class=processor,
            row_validation=RowValidation(strict=True),
        )


@pytest.mark.parametrize("precompute", [True, False])
def test_lora_trains_the_adapter_against_the_base_model(precompute, tiny_vlm_dirs, dpo_args):
    path = tiny_vlm_dirs["llava_policy"]
    processor = AutoProcessor.from_pretrained(path)
    data = oracle_preference_dataset(4)
    trainer = RLAIFVDPOTrainer(
        model=load(path),
        args=dpo_args(precompute_ref_log_probs=precompute, learning_rate=1e-2),
        train_dataset=data,
        processing_class=processor,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    assert trainer.ref_model is None
    base_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    adapter_before = trainable_state(trainer.model)
    assert adapter_before and all("lora_" in name for name in adapter_before)
    if precompute:  # computed with the adapter disabled: the base model's log-probs
        expected = precompute_ref_log_probs(load(path), processor, data)
        for column in ("ref_chosen_logps", "ref_rejected_logps"):
            torch.testing.assert_close(
                torch.tensor(trainer.train_dataset[column]), torch.tensor(expected[column]), atol=1e-4, rtol=0
            )
    trainer.train()
    assert any(not torch.equal(p, adapter_before[n]) for n, p in trainable_state(trainer.model).items())
    assert all(torch.equal(p, base_before[n]) for n, p in trainer.model.named_parameters() if "lora_" not in n)
    assert "length_normalized_rewards/margins" in trainer.state.log_history[0]
    if precompute:  # the trained adapter, disabled, still gives the reference
        again = precompute_ref_log_probs(trainer.model, processor, data)
        torch.testing.assert_close(
            torch.tensor(again["ref_chosen_logps"]),
            torch.tensor(trainer.train_dataset["ref_chosen_logps"]),
            atol=1e-4,
            rtol=0,
        )


def test_activation_checkpointing_gives_the_same_updates(tiny_vlm_dirs, dpo_args):
    path = tiny_vlm_dirs["qwen2_vl_policy"]
    processor = AutoProcessor.from_pretrained(path)
    data = oracle_preference_dataset(4)
    states = []
    for checkpointing in (False, True):
        trainer = RLAIFVDPOTrainer(
            model=load(path),
            args=dpo_args(
                precompute_ref_log_probs=True, activation_checkpointing=checkpointing, **SAME_HYPERPARAMETERS
            ),
            train_dataset=data,
            processing_class=processor,
        )
        trainer.train()
        assert trainer.model.is_activation_checkpointing == checkpointing
        states.append(trainable_state(trainer.model))
    assert_same_grads(states[0], states[1], atol=1e-5)


def test_evaluation_data_gets_its_reference_columns(tiny_vlm_dirs, dpo_args):
    path = tiny_vlm_dirs["llava_policy"]
    processor = AutoProcessor.from_pretrained(path)
    trainer = RLAIFVDPOTrainer(
        model=load(path),
        args=dpo_args(precompute_ref_log_probs=True, eval_strategy="steps", eval_steps=1),
        train_dataset=oracle_preference_dataset(4),
        eval_dataset={"held_out": oracle_preference_dataset(2, start_seed=100)},
        processing_class=processor,
    )
    assert "ref_chosen_logps" in trainer.eval_dataset["held_out"].column_names
    trainer.train()
    assert any(
        "eval_held_out_loss" in log and "eval_length_normalized_rewards/chosen" in log
        for log in trainer.state.log_history
    )
    with pytest.raises(ValueError, match="training has started"):  # the model is no longer the reference
        trainer.evaluate(oracle_preference_dataset(2, start_seed=200))
