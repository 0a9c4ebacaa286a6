"""The parts that run differently on a GPU, on each device: a bf16 training step, the packed labeler with SDPA,
prefix sharing, bf16 reference log-probs against TRL's, and the demo recipe.

Each test takes a `device`: "cpu" runs everywhere, "cuda" is marked `gpu` and skipped (visibly) without a CUDA GPU;
`scripts/gpu_check.sh` runs the `gpu` tests on one.
"""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import DPOConfig, DPOTrainer

from rlaifv_testbed import ShapesWorld, oracle_preference_dataset
from rlaifv_trl import RLAIFVDPOTrainer, precompute_ref_log_probs
from rlaifv_trl.feedback import LabelGroup, YesNoLabeler
from rlaifv_trl.prefix_sharing import continuation_logits, encode_prefix, next_token_logits, packing_refusal
from rlaifv_trl.trainer.reference_logps import mixed_precision_dtype


pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
ROOT = Path(__file__).parents[1]
QUESTIONS = [
    "Is there a red circle in the image? Please answer yes or no.",
    "Is there no blue square in the image? Please answer yes or no.",
    "Does the green triangle sit on the left? Please answer yes or no.",
    "x",
    "Are there two yellow squares next to each other, one above the other? Please answer yes or no.",
]


def load(path, device: str = "cpu", **kwargs):
    return AutoModelForImageTextToText.from_pretrained(path, **kwargs).to(device)


def on_device(device: str) -> dict:
    """Training settings for `device`, in bf16 mixed precision."""
    return {"use_cpu": device == "cpu", "bf16": True}


class DeviceRecorder:
    """The device types of the tensors a module receives and the dtypes it returns (hooks on the real module)."""

    def __init__(self, module: torch.nn.Module):
        self.devices: set[str] = set()
        self.dtypes: set[torch.dtype] = set()
        self.handles = [
            module.register_forward_pre_hook(self._inputs, with_kwargs=True),
            module.register_forward_hook(self._output),
        ]

    def _inputs(self, module, args, kwargs):
        self.devices |= {value.device.type for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)}

    def _output(self, module, args, output):
        self.dtypes.add(getattr(output, "logits", output).dtype)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def first_language_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """The first linear layer of the language model (TRL's DPO forward computes the log-probs from the hidden states,
    past `lm_head`)."""
    return next(m for n, m in model.named_modules() if "language_model" in n and isinstance(m, torch.nn.Linear))


def _image_prefix(processor) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "@@"}]}]
    return processor.apply_chat_template(messages, tokenize=False).split("@@")[0]


@pytest.mark.parametrize("device", DEVICES)
def test_a_bf16_training_step_on_the_device_is_dpo_trainers(device, tiny_vlm_dirs, dpo_args):
    """One DPO step in bf16 autocast (float32 master weights) on `device`: the same loss and update as TRL's."""
    path = tiny_vlm_dirs["llava"]
    processor = AutoProcessor.from_pretrained(path)
    data = oracle_preference_dataset(4)
    settings = {**on_device(device), "max_steps": 1, "learning_rate": 1e-3, "lr_scheduler_type": "constant"}
    settings.update(warmup_steps=0, weight_decay=0.0, max_length=1024, per_device_train_batch_size=4)
    plain = DPOTrainer(model=load(path), args=dpo_args(DPOConfig, **settings), train_dataset=data,
                       processing_class=processor)  # fmt: skip
    ours = RLAIFVDPOTrainer(
        model=load(path),
        args=dpo_args(log_length_normalized_rewards=False, **settings),
        train_dataset=data,
        processing_class=processor,
    )
    start = {name: p.detach().clone() for name, p in ours.model.named_parameters()}
    recorder = DeviceRecorder(first_language_linear(ours.model))
    try:
        plain.train()
        ours.train()
    finally:
        recorder.remove()
    assert {p.device.type for p in ours.model.parameters()} == {device} == recorder.devices
    assert {p.dtype for p in ours.model.parameters()} == {torch.float32}  # master weights
    assert recorder.dtypes == {torch.bfloat16}  # the forward ran in bf16 autocast
    (plain_loss,), (our_loss,) = ([log["loss"] for log in t.state.log_history if "loss" in log] for t in (plain, ours))
    assert torch.isfinite(torch.tensor(our_loss)) and our_loss == pytest.approx(plain_loss, rel=1e-3)
    updates = [
        torch.cat([(p.detach() - start[n]).flatten().float().cpu() for n, p in t.model.named_parameters()])
        for t in (ours, plain)
    ]
    ours_update, plain_update = updates
    assert ours_update.abs().max() > 0  # the step changed the weights
    assert torch.nn.functional.cosine_similarity(ours_update, plain_update, dim=0) > 0.999


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_the_packed_labeler_with_sdpa_on_the_device_equals_plain_forwards(device, arch, tiny_vlm_dir):
    path = tiny_vlm_dir(arch, seed=1)
    model = load(path, device, attn_implementation="sdpa").eval()
    processor = AutoProcessor.from_pretrained(path)
    assert model.config.get_text_config()._attn_implementation == "sdpa" and packing_refusal(model) is None
    images = [ShapesWorld().scene(6).render()]
    labeler = YesNoLabeler(model, processor, batch_size=3)  # two packed forward passes
    recorder = DeviceRecorder(model)
    try:
        packed = labeler.label_group(LabelGroup(images, QUESTIONS))
    finally:
        recorder.remove()
    assert labeler.num_full_forwards == 0 and recorder.devices == {device}
    padded = YesNoLabeler(model, processor, batch_size=3, pack=False).label_group(LabelGroup(images, QUESTIONS))
    for question, label, padded_label in zip(QUESTIONS, packed, padded):
        plain = labeler.full_forward(images, question)
        for other in (plain, padded_label):
            assert abs(label.p_yes - other.p_yes) < 1e-4 and abs(label.p_no - other.p_no) < 1e-4
            assert label.accepted == other.accepted


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_prefix_sharing_on_the_device_equals_plain_forwards(device, arch, tiny_vlm_dir):
    """Shared-prefix logits (cache copies, packed rows, 3-D rotary positions for Qwen2-VL) equal plain forwards."""
    path = tiny_vlm_dir(arch, seed=1)
    model, processor = load(path, device).eval(), AutoProcessor.from_pretrained(path)
    image = ShapesWorld().scene(4).render()
    prefix_text = _image_prefix(processor)
    prefix = encode_prefix(model, processor(text=[prefix_text], images=[image], return_tensors="pt").to(device))
    assert prefix.last_logits.device.type == device
    suffixes = ["Is there a red circle in the image? Please answer yes or no.", "Describe the image.", "x"]
    ids = [processor.tokenizer.encode(suffix, add_special_tokens=False) for suffix in suffixes]
    shared = continuation_logits(model, prefix, ids, batch_size=2)
    packed = next_token_logits(model, prefix, ids, batch_size=2)
    for suffix, logits, last in zip(suffixes, shared, packed):
        full = processor(text=[prefix_text + suffix], images=[image], return_tensors="pt").to(device)
        with torch.no_grad():
            reference = model(**full).logits[0]
        torch.testing.assert_close(logits, reference[prefix.length :], atol=1e-4, rtol=0)
        torch.testing.assert_close(last, reference[-1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_reference_log_probs_on_the_device_are_dpo_trainers(device, tiny_vlm_dirs, dpo_args):
    """Under `bf16` the reference passes run in bf16 autocast on `device`, as TRL's do, in the trainer too."""
    reference = tiny_vlm_dirs["llava"]
    processor = AutoProcessor.from_pretrained(reference)
    data = oracle_preference_dataset(4)
    args = dpo_args(DPOConfig, per_device_train_batch_size=4, **on_device(device))
    trl_trainer = DPOTrainer(
        model=load(tiny_vlm_dirs["llava_policy"]), ref_model=load(reference), args=args, train_dataset=data,
        processing_class=processor,
    )  # fmt: skip
    assert next(trl_trainer.ref_model.parameters()).device.type == device
    batch = trl_trainer._prepare_inputs(trl_trainer.data_collator(list(data)))
    expected = torch.stack(trl_trainer.compute_ref_log_probs(trl_trainer.ref_model, batch), dim=1).cpu()

    model = load(reference, device)
    bf16, float32 = (
        torch.tensor(
            precompute_ref_log_probs(model, processor, data, batch_size=4, autocast_dtype=dtype)
            .select_columns(["ref_chosen_logps", "ref_rejected_logps"])
            .to_pandas()
            .values
        )
        for dtype in (mixed_precision_dtype(args), None)
    )
    # Sums of about 20 token log-probs: float32 passes differ from bf16 ones by about 1e-2 here, bf16 ones by rounding.
    torch.testing.assert_close(bf16, expected, atol=1e-3, rtol=0)
    assert not torch.allclose(float32, expected, atol=1e-3, rtol=0)  # float32 passes are not what bf16 training sees

    model = load(reference)  # on the CPU: the trainer moves it to its device before it precomputes
    recorder = DeviceRecorder(model)
    try:
        trainer = RLAIFVDPOTrainer(
            model=model, args=dpo_args(precompute_ref_log_probs=True, precompute_ref_batch_size=4, **on_device(device)),
            train_dataset=data, processing_class=processor,
        )  # fmt: skip
    finally:
        recorder.remove()
    assert recorder.devices == {device}
    columns = trainer.train_dataset.select_columns(["ref_chosen_logps", "ref_rejected_logps"]).to_pandas().values
    torch.testing.assert_close(torch.tensor(columns), bf16, atol=1e-3, rtol=0)


@pytest.mark.gpu
def test_the_demo_recipe_runs_on_the_gpu_in_bf16(tmp_path):
    """The embedded default (tiny_cpu.yaml) on the GPU, shrunk to one iteration of 16 prompts."""
    from rlaifv_trl.scripts.iterative_dpo import main, make_parser

    argv = [
        *("--config", str(ROOT / "recipes/configs/tiny_cpu.yaml"), "--output_dir", str(tmp_path / "run")),
        *("--use_cpu", "false", "--bf16", "true", "--num_iterations", "1", "--prompts_per_iteration", "16"),
        *("--evaluation_prompts", "16", "--disable_tqdm", "true"),
    ]
    arguments = make_parser().parse_args_and_config(argv)
    training_args = arguments[2]
    assert training_args.device.type == "cuda" and training_args.bf16
    torch.cuda.reset_peak_memory_stats()
    summary = main(*arguments)
    assert torch.cuda.max_memory_allocated() > 0
    assert set(summary.evaluation) == {0, 1} and summary.num_pairs[1] > 0
    policy = AutoModelForImageTextToText.from_pretrained(summary.policies[1])
    assert all(torch.isfinite(p).all() for p in policy.parameters())
