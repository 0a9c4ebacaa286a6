"""One vLLM engine over the GPUs of several processes: which process runs which shards, and a labeling stage run
under `torchrun --nproc_per_node 2` by one engine of tensor-parallel size 2 on the main process (vLLM's CPU build,
one core per engine worker), the other process waiting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlaifv_testbed import build_tiny_vlm
from rlaifv_trl.feedback import FeedbackConfig, RunReport
from rlaifv_trl.feedback.placement import StagePlacement, engine_group_size
from support.stand_ins import undecided_labeler
from test_feedback_resume import SCRIPT, _env, _free_port, _results
from test_vllm_backends import VLLM_PRESET, vllm_python  # noqa: F401 (a fixture)


RUN = ["--num-prompts", "8", "--num-candidates", "4", "--max-new-tokens", "16", "--shard-size", "2"]


def test_shards_go_to_the_first_rank_of_each_group():
    assert StagePlacement(2, 1).shards(1, 5) == [1, 3]  # every process its own engine: shard i on process i mod N
    assert StagePlacement(8, 8).shards(0, 5) == [0, 1, 2, 3, 4]  # one engine on all GPUs: the main process
    assert all(StagePlacement(8, 8).shards(rank, 5) == [] for rank in range(1, 8))
    groups = StagePlacement(8, 2)
    assert [groups.shards(rank, 6) for rank in range(8)] == [[0, 4], [], [1, 5], [], [2], [], [3], []]
    assert [groups.owner(shard) for shard in range(6)] == [0, 2, 4, 6, 0, 2]
    for placement in (StagePlacement(8, 1), StagePlacement(8, 2), StagePlacement(8, 4), StagePlacement(8, 8)):
        runs = sorted(shard for rank in range(8) for shard in placement.shards(rank, 11))
        assert runs == list(range(11))  # each shard once, whatever the groups
        assert all(shard in placement.shards(placement.owner(shard), 11) for shard in range(11))


def test_engine_groups_must_divide_the_processes_of_a_node():
    assert engine_group_size(8, num_processes=1) == 1  # one process drives all its GPUs
    assert engine_group_size(8, num_processes=8) == 8
    assert engine_group_size(4, num_processes=16, processes_per_node=8) == 4
    with pytest.raises(ValueError, match=r"vllm_tensor_parallel_size \(3\) must divide the processes of each node"):
        engine_group_size(3, num_processes=8)
    with pytest.raises(ValueError, match="must divide the processes of each node"):
        engine_group_size(16, num_processes=16, processes_per_node=8)  # an engine on two nodes
    with pytest.raises(ValueError, match="must divide the number of processes"):
        StagePlacement(8, 3)
    assert "vllm_tensor_parallel_size" in FeedbackConfig.fields_not_affecting_results  # a resumed run may change it


@pytest.fixture(scope="module")
def llava(tmp_path_factory) -> Path:
    folder = build_tiny_vlm(tmp_path_factory.mktemp("llava-tp"), "llava", VLLM_PRESET, seed=0)
    return undecided_labeler(folder)


def _tensor_parallel_env() -> dict[str, str]:
    """Engines on a 1 GiB KV cache, offline; each of the 2 engine workers bound to its own core (vLLM's automatic
    binding wants a NUMA node per worker)."""
    return {**_env(), "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0|1"}


def _command(llava: Path, python: str, output_dir: Path, report: Path) -> list[str]:
    return [
        str(SCRIPT), "--policy", str(llava), "--labeler", str(llava), "--vllm-python", python,
        "--tensor-parallel-size", "2", "--output-dir", str(output_dir), "--report", str(report), *RUN,
    ]  # fmt: skip


def _run(command: list[str], processes: int) -> None:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1"]
        launcher += ["--master_port", str(_free_port())]
    run = subprocess.run(
        [*launcher, *command], env=_tensor_parallel_env(), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-4000:]


@pytest.mark.slow
def test_one_engine_on_the_main_process_labels_as_one_process_does(llava, vllm_python, tmp_path):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    _run(_command(llava, vllm_python, one, tmp_path / "one-report"), processes=1)
    _run(_command(llava, vllm_python, two, tmp_path / "two-report"), processes=2)

    assert RunReport.load(two / "report.json").num_processes == 2
    for stage in ("candidates", "claims"):  # on transformers: shard i on process i mod 2
        for path in sorted((two / stage).glob("shard-*.json")):
            assert json.loads(path.read_text())["process_index"] == int(path.stem.split("-")[1]) % 2
    labels = sorted((two / "labels").glob("shard-*.json"))
    assert len(labels) == 4 and all(json.loads(path.read_text())["process_index"] == 0 for path in labels)
    reports = {rank: json.loads((tmp_path / f"two-report-{rank}.json").read_text()) for rank in (0, 1)}
    assert reports[0]["engines_started"] == 1 and reports[1]["engines_started"] == 0  # the other process waited
    assert reports[0]["left_running"] == reports[1]["left_running"] == []  # the engine's processes had ended

    preference, audit = _results(one)
    assert preference and audit
    assert _results(two) == (preference, audit)  # the same labels, pairs and audit as one process
    for path in labels:
        records = json.loads(path.read_text())["records"]
        assert records == json.loads((one / "labels" / path.name).read_text())["records"]

    # The single process's run, two of its label shards lost, resumed by two processes: the main process labels them.
    for shard in (1, 3):
        (one / "labels" / f"shard-0000{shard}.json").unlink()
    kept = {path: path.stat().st_mtime_ns for path in one.glob("*/shard-*.json")}
    _run(_command(llava, vllm_python, one, tmp_path / "resumed-report"), processes=2)
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in kept.items())
    redone = [json.loads((one / "labels" / f"shard-0000{shard}.json").read_text()) for shard in (1, 3)]
    assert [payload["process_index"] for payload in redone] == [0, 0]
    assert _results(one) == (preference, audit)
