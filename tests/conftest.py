"""Shared pytest configuration and fixtures.

Sections:
1. Test-support imports (``tests/support``).
2. A Hub on loopback and the client environment. This runs at import time,
   before anything imports huggingface_hub or datasets: they read the
   environment when imported.
3. Network guard: nothing may leave loopback during the session.
4. Hub fixtures: ``hub``, ``hub_repo_id``; injected failures end with their test.
5. Feedback fixtures: tiny models built once per session.
6. Trainer fixtures: tiny saved VLMs, one torch thread, quick CPU DPO settings.
7. Tests marked ``gpu``: skipped, with the reason shown, where there is no CUDA GPU.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from pathlib import Path

import pytest


# ---------------------------------------------------------------------------
# 1. Test-support imports: make tests/support importable as `support`.

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support import network_guard  # noqa: E402
from support.hub_server import LoopbackHub, start_hub_server, start_loopback_hub  # noqa: E402


# ---------------------------------------------------------------------------
# 2. A Hub on loopback, started once per session, and the client environment.

_too_early = sorted({"huggingface_hub", "datasets", "transformers"} & set(sys.modules))
if _too_early:
    raise RuntimeError(
        f"{', '.join(_too_early)} imported before tests/conftest.py could point it at the loopback hub; "
        "a pytest plugin or an earlier conftest imported it."
    )

network_guard.install()  # before any client library creates a connection
_HUB = start_loopback_hub()  # sets HF_ENDPOINT, HF_TOKEN, HF_HOME (temporary), HF_HUB_DISABLE_XET, ...

import datasets  # noqa: E402


datasets.config.USE_PARQUET_EXPORT = False  # else datasets asks datasets-server.<host>, not loopback


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _HUB.stop()  # also deletes the temporary HF_HOME


# ---------------------------------------------------------------------------
# 3. Network guard: fail any test during which something tried to leave loopback.


@pytest.fixture(autouse=True)
def _stay_on_loopback():
    """Fail the test if a connection or DNS lookup outside loopback was attempted.

    Tests that provoke a refusal on purpose remove its record with
    ``network_guard.take_blocked()``.
    """
    yield
    attempts = network_guard.take_blocked()
    if attempts:
        listed = "; ".join(str(attempt) for attempt in attempts)
        pytest.fail(f"network access outside loopback was attempted (and refused): {listed}", pytrace=False)


# ---------------------------------------------------------------------------
# 4. Hub fixtures.


@pytest.fixture(scope="session")
def hub() -> LoopbackHub:
    """The session's loopback hub.

    ``.url``; ``.user`` and ``.token`` (the clients' default, from ``HF_TOKEN``);
    ``.other_user`` and ``.other_token`` (a second account); ``.server``, whose
    ``.server.hub`` has ``inject_failures``, ``requests`` and ``count_requests``.
    """
    return _HUB


@pytest.fixture(autouse=True)
def _forget_injected_failures():
    """Drop failures a test injected but did not use up, so they cannot hit later tests."""
    yield
    _HUB.server.hub.clear_failures()


@pytest.fixture
def hub_repo_id(hub: LoopbackHub) -> str:
    """A fresh repository id under the test user's namespace (not created yet)."""
    return f"{hub.user}/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def down_hub_url(hub: LoopbackHub) -> str:
    """The URL of a hub that was started and stopped: nothing listens there any more."""
    server, url = start_hub_server(tokens={hub.token: hub.user})
    server.stop()
    return url


# ---------------------------------------------------------------------------
# 5. Feedback fixtures: tiny models built once per session, one CPU thread per test.


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """`tiny_vlm_dir(arch="llava", seed=0)`: the directory of a tiny VLM, built once per session."""
    from rlaifv_testbed import build_tiny_vlm

    built: dict[tuple[str, int], Path] = {}

    def get(arch: str = "llava", seed: int = 0) -> Path:
        if (arch, seed) not in built:
            built[arch, seed] = build_tiny_vlm(tmp_path_factory.mktemp(f"tiny-{arch}-{seed}"), arch, "tiny", seed=seed)
        return built[arch, seed]

    return get


@contextlib.contextmanager
def _torch_threads(count: int):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def one_thread():
    """Run the test on one CPU thread: tiny models are many times faster so on a shared 2-core machine."""
    with _torch_threads(1):
        yield


# ---------------------------------------------------------------------------
# 6. Trainer fixtures: tiny saved VLMs, one torch thread, and quick CPU DPO settings.


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one thread for a module: on two shared cores, extra threads mostly wait for each other."""
    with _torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_vlm_dirs(tiny_vlm_dir) -> dict[str, Path]:
    """Saved tiny models: "llava" and "qwen2_vl" (seed 0, used as references) and "llava_policy" and
    "qwen2_vl_policy" (seed 1, so that policy and reference differ)."""
    dirs = {}
    for arch in ("llava", "qwen2_vl"):
        dirs[arch] = tiny_vlm_dir(arch, seed=0)
        dirs[f"{arch}_policy"] = tiny_vlm_dir(arch, seed=1)
    return dirs


@pytest.fixture
def dpo_args(tmp_path):
    """Build a DPO config for quick CPU runs: `dpo_args(**overrides)`, or `dpo_args(DPOConfig, **overrides)`."""

    def make(config_class=None, **overrides):
        from rlaifv_trl import RLAIFVDPOConfig

        settings = {
            "output_dir": str(tmp_path / "dpo"),
            "use_cpu": True,
            "bf16": False,
            "report_to": "none",
            "per_device_train_batch_size": 2,
            "per_device_eval_batch_size": 2,
            "max_steps": 2,
            "logging_steps": 1,
            "save_strategy": "no",
            "activation_checkpointing": False,
            "disable_tqdm": True,
            "seed": 0,
        }
        settings.update(overrides)
        return (config_class or RLAIFVDPOConfig)(**settings)

    return make


# ---------------------------------------------------------------------------
# 7. Tests marked `gpu` need a CUDA GPU: without one they are skipped, each with the reason in pytest's summary (`-ra`).


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu_tests:
        import torch

        if not torch.cuda.is_available():
            for item in gpu_tests:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
