"""Reference log-probs of vision preference data: computed once, stored as columns, used without a reference model."""

import math

import pytest
import torch
from datasets import load_dataset, load_from_disk
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import DPOConfig, DPOTrainer

from rlaifv_testbed import make_tiny_vlm, oracle_preference_dataset
from rlaifv_trl import RLAIFVDPOTrainer, precompute_ref_log_probs
from rlaifv_trl.trainer.reference_logps import mixed_precision_dtype


pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def load(path):
    return AutoModelForImageTextToText.from_pretrained(path)


def column_values(dataset):
    return torch.tensor([dataset[column] for column in COLUMNS]).T


class ForwardCounter:
    """Counts the forward passes of a module (a forward hook on the real model)."""

    def __init__(self, module):
        self.count = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.count += 1


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_columns_hold_the_log_probs_dpo_trainer_computes_for_the_reference(arch, tiny_vlm_dirs, dpo_args):
    reference = tiny_vlm_dirs[arch]
    processor = AutoProcessor.from_pretrained(reference)
    data = oracle_preference_dataset(5)
    with_columns = precompute_ref_log_probs(load(reference), processor, data, batch_size=2)  # 2 + 2 + 1 rows
    assert with_columns.features["ref_chosen_logps"].dtype == "float32"
    assert with_columns.column_names == data.column_names + list(COLUMNS)

    trl_trainer = DPOTrainer(
        model=load(tiny_vlm_dirs[f"{arch}_policy"]),
        ref_model=load(reference),
        args=dpo_args(DPOConfig),
        train_dataset=data,
        processing_class=processor,
    )
    batch = trl_trainer._prepare_inputs(trl_trainer.data_collator(list(data)))
    expected = torch.stack(trl_trainer.compute_ref_log_probs(trl_trainer.ref_model, batch), dim=1)
    torch.testing.assert_close(column_values(with_columns), expected, atol=1e-4, rtol=0)

    again = precompute_ref_log_probs(load(tiny_vlm_dirs[f"{arch}_policy"]), processor, with_columns)
    assert again.column_names == with_columns.column_names  # replaced, not duplicated
    assert not torch.allclose(column_values(again), column_values(with_columns))


def test_columns_travel_to_disk_and_to_the_hub(tiny_vlm_dirs, tmp_path, hub_repo_id):
    path = tiny_vlm_dirs["llava"]
    data = precompute_ref_log_probs(load(path), AutoProcessor.from_pretrained(path), oracle_preference_dataset(3))
    data.save_to_disk(tmp_path / "pairs")
    assert torch.equal(column_values(load_from_disk(tmp_path / "pairs")), column_values(data))
    data.push_to_hub(hub_repo_id, config_name="iteration-1")
    pulled = load_dataset(hub_repo_id, "iteration-1", split="train")
    assert pulled.features["ref_rejected_logps"].dtype == "float32"
    assert torch.equal(column_values(pulled), column_values(data))


def test_with_the_columns_no_reference_model_is_loaded_and_no_reference_forward_runs(tiny_vlm_dirs, dpo_args):
    processor = AutoProcessor.from_pretrained(tiny_vlm_dirs["llava"])
    data = precompute_ref_log_probs(load(tiny_vlm_dirs["llava"]), processor, oracle_preference_dataset(4))
    model, _ = make_tiny_vlm("llava", "tiny", seed=1)  # in memory, never saved: nothing to load a reference from
    assert model.config._name_or_path == ""
    counter = ForwardCounter(model)
    trainer = RLAIFVDPOTrainer(
        model=model,
        args=dpo_args(precompute_ref_log_probs=True, max_steps=1),
        train_dataset=data,
        processing_class=processor,
    )
    assert trainer.ref_model is None
    assert counter.count == 0  # nothing computed at initialization
    assert torch.equal(column_values(trainer.train_dataset), column_values(data))
    trainer.train()
    assert counter.count == 1  # one step: the policy's forward only
    assert trainer.args.precompute_ref_log_probs is True  # the user's config is left as given


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_loss_and_gradients_match_a_run_with_the_reference_model(arch, tiny_vlm_dirs, dpo_args):
    policy, reference = tiny_vlm_dirs[f"{arch}_policy"], tiny_vlm_dirs[arch]
    processor = AutoProcessor.from_pretrained(policy)
    data = oracle_preference_dataset(3)
    results = []
    for precompute in (True, False):
        trainer = RLAIFVDPOTrainer(
            model=load(policy),
            ref_model=load(reference),
            args=dpo_args(precompute_ref_log_probs=precompute),
            train_dataset=data,
            processing_class=processor,
        )
        assert ("ref_chosen_logps" in trainer.train_dataset.column_names) == precompute
        rows = [dict(row) for row in trainer.train_dataset]
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(trainer.data_collator(rows)))
        loss.backward()
        results.append(
            (loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
        )
    (loss_pre, grads_pre), (loss_ref, grads_ref) = results
    assert loss_pre.item() != pytest.approx(0.6931, abs=1e-3)  # policy and reference differ: a real signal
    torch.testing.assert_close(loss_pre, loss_ref, atol=1e-5, rtol=0)
    assert grads_pre.keys() == grads_ref.keys()
    for name in grads_pre:
        torch.testing.assert_close(grads_pre[name], grads_ref[name], atol=1e-5, rtol=1e-4, msg=name)


def test_an_answer_cut_away_is_named_by_its_row_index(tiny_vlm_dirs):
    path = tiny_vlm_dirs["llava"]
    processor = AutoProcessor.from_pretrained(path)
    with pytest.raises(ValueError, match=r"max_length=20 leaves no token of the chosen answer of row 0"):
        precompute_ref_log_probs(load(path), processor, oracle_preference_dataset(2), max_length=20)


def test_streaming_data_and_ld_alpha_are_refused_with_precompute(tiny_vlm_dirs, dpo_args):
    path = tiny_vlm_dirs["llava"]
    processor = AutoProcessor.from_pretrained(path)
    data = oracle_preference_dataset(2)
    with pytest.raises(ValueError, match="IterableDataset"):
        RLAIFVDPOTrainer(
            model=load(path),
            args=dpo_args(precompute_ref_log_probs=True),
            train_dataset=data.to_iterable_dataset(),
            processing_class=processor,
        )
    args = dpo_args(precompute_ref_log_probs=True, ld_alpha=0.5)
    with pytest.raises(ValueError, match="ld_alpha"):
        RLAIFVDPOTrainer(model=load(path), args=args, train_dataset=data, processing_class=processor)
    assert args.precompute_ref_log_probs is True


def test_non_finite_stored_reference_log_probs_are_bad_rows(tiny_vlm_dirs, dpo_args):
    """A NaN or an infinite stored value would make the loss NaN and every weight NaN: such rows are skipped and
    counted (strict mode raises), and the others train to finite weights."""
    from rlaifv_trl.validation import BadRowError, RowValidation

    reference = tiny_vlm_dirs["llava"]
    processor = AutoProcessor.from_pretrained(reference)
    data = precompute_ref_log_probs(load(reference), processor, oracle_preference_dataset(6), batch_size=3)
    chosen, rejected = list(data["ref_chosen_logps"]), list(data["ref_rejected_logps"])
    chosen[1], rejected[4] = float("nan"), float("-inf")
    data = data.remove_columns(list(COLUMNS)).add_column(COLUMNS[0], chosen).add_column(COLUMNS[1], rejected)

    trainer = RLAIFVDPOTrainer(
        model=load(tiny_vlm_dirs["llava_policy"]),
        args=dpo_args(precompute_ref_log_probs=True, learning_rate=1e-3),
        train_dataset=data,
        processing_class=processor,
    )
    report = trainer.row_validation_reports["train"]
    assert report.num_kept == 4 and sorted(entry["row"] for entry in report.skipped) == [1, 4]
    assert {(entry["code"], entry["field"]) for entry in report.skipped} == {
        ("ref_logps.non_finite", "ref_chosen_logps"), ("ref_logps.non_finite", "ref_rejected_logps"),
    }  # fmt: skip
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(
        math.isfinite(log["loss"]) and math.isfinite(log["rewards/margins"])
        for log in trainer.state.log_history
        if "loss" in log
    )

    with pytest.raises(BadRowError, match=r"row 1 .*ref_logps\.non_finite"):
        RLAIFVDPOTrainer(
            model=load(tiny_vlm_dirs["llava_policy"]),
            args=dpo_args(precompute_ref_log_probs=True),
            train_dataset=data,
            processing_class=processor,
            row_validation=RowValidation(strict=True),
        )


def test_rows_whose_computed_reference_log_probs_are_not_finite_are_skipped(tiny_vlm_dirs, dpo_args):
    """A reference model that overflows on one row's tokens (here: NaN embeddings of tokens only that row's chosen
    answer has) loses that row, counted, not the weights of the trained model."""
    processor = AutoProcessor.from_pretrained(tiny_vlm_dirs["llava"])
    data = oracle_preference_dataset(4)
    chosen = list(data["chosen"])
    chosen[2] = [{"role": "assistant", "content": [{"type": "text", "text": "zyzzyva quixotic"}]}]
    data = data.remove_columns("chosen").add_column("chosen", chosen)
    others = {
        token
        for index, row in enumerate(data)
        for text in (str(row["prompt"]), str(row["rejected"]), *([] if index == 2 else [str(row["chosen"])]))
        for token in processor.tokenizer(text)["input_ids"]
    }
    only_row_2 = sorted(set(processor.tokenizer("zyzzyva quixotic")["input_ids"]) - others)
    assert only_row_2, processor.tokenizer.convert_ids_to_tokens(only_row_2)
    reference = load(tiny_vlm_dirs["llava"])
    with torch.no_grad():
        reference.get_input_embeddings().weight[only_row_2] = float("nan")

    trainer = RLAIFVDPOTrainer(
        model=load(tiny_vlm_dirs["llava_policy"]),
        ref_model=reference,
        args=dpo_args(precompute_ref_log_probs=True, learning_rate=1e-3),
        train_dataset=data,
        processing_class=processor,
    )
    report = trainer.row_validation_reports["train"]
    assert [(entry["row"], entry["code"], entry["field"]) for entry in report.skipped] == [
        (2, "ref_logps.non_finite", "ref_chosen_logps")
    ]
    assert report.num_kept == 3 and len(trainer.train_dataset) == 3
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_under_bf16_the_columns_are_what_dpo_trainer_computes_in_bf16_autocast(tiny_vlm_dirs, dpo_args):
    """A float32 model trained with `bf16`: the reference passes run in bf16 autocast, as TRL's do, not in float32."""
    reference = tiny_vlm_dirs["llava"]
    processor = AutoProcessor.from_pretrained(reference)
    data = oracle_preference_dataset(4)
    args = dpo_args(DPOConfig, bf16=True, per_device_train_batch_size=4)
    trl_trainer = DPOTrainer(
        model=load(tiny_vlm_dirs["llava_policy"]), ref_model=load(reference), args=args, train_dataset=data,
        processing_class=processor,
    )  # fmt: skip
    batch = trl_trainer._prepare_inputs(trl_trainer.data_collator(list(data)))
    expected = torch.stack(trl_trainer.compute_ref_log_probs(trl_trainer.ref_model, batch), dim=1)

    bf16 = column_values(
        precompute_ref_log_probs(
            load(reference), processor, data, batch_size=4, autocast_dtype=mixed_precision_dtype(args)
        )
    )
    float32 = column_values(precompute_ref_log_probs(load(reference), processor, data, batch_size=4))
    assert mixed_precision_dtype(args) is torch.bfloat16 and mixed_precision_dtype(dpo_args()) is None
    torch.testing.assert_close(bf16, expected, atol=1e-4, rtol=0)
    assert not torch.allclose(float32, expected, atol=1e-4, rtol=0)  # float32 passes are not what bf16 training sees


def test_the_trainer_precomputes_under_its_mixed_precision(tiny_vlm_dirs, dpo_args):
    reference = tiny_vlm_dirs["llava"]
    processor = AutoProcessor.from_pretrained(reference)
    data = oracle_preference_dataset(4)
    expected = column_values(
        precompute_ref_log_probs(load(reference), processor, data, batch_size=2, autocast_dtype=torch.bfloat16)
    )
    trainer = RLAIFVDPOTrainer(
        model=load(reference), args=dpo_args(bf16=True, precompute_ref_log_probs=True), train_dataset=data,
        processing_class=processor,
    )  # fmt: skip
    torch.testing.assert_close(column_values(trainer.train_dataset), expected, atol=0, rtol=0)
