"""The loopback Hub (tests/support/hub_server.py) through the real clients.

Every test talks to the session's hub with huggingface_hub and datasets as a
user would; nothing is mocked.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import safetensors.torch
import torch
from datasets import Dataset, Features, Image, IterableDataset, Value, get_dataset_config_names, load_dataset
from huggingface_hub import DatasetCard, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session
from PIL import Image as PILImage
from transformers import AutoModelForImageTextToText, AutoProcessor

from rlaifv_testbed import build_tiny_vlm
from support import network_guard
from support.network_guard import BlockedAttempt


# ---------------------------------------------------------------------------
# Helpers


def make_image(seed: int, size: tuple[int, int] = (12, 10)) -> PILImage.Image:
    """A small RGB image whose pixels depend on ``seed``."""
    width, height = size
    pixels = bytes((seed * 37 + i * 11) % 256 for i in range(width * height * 3))
    return PILImage.frombytes("RGB", size, pixels)


def make_dataset(seed: int, n_rows: int = 3) -> Dataset:
    """A dataset with an Image column, a string column and an int column."""
    features = Features({"image": Image(), "question": Value("string"), "id": Value("int64")})
    return Dataset.from_dict(
        {
            "image": [make_image(seed + i) for i in range(n_rows)],
            "question": [f"Is row {i} of dataset {seed} fine?" for i in range(n_rows)],
            "id": [seed * 100 + i for i in range(n_rows)],
        },
        features=features,
    )


def assert_same_rows(actual: list[dict], expected: list[dict]) -> None:
    """Rows are equal, images compared by mode, size and pixels."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, PILImage.Image):
                assert (got[key].mode, got[key].size) == (value.mode, value.size)
                assert got[key].tobytes() == value.tobytes()
            else:
                assert got[key] == value


def upload_and_download_folder(repo_id: str, folder: Path) -> Path:
    """Create a model repo, upload ``folder`` to it and download a fresh snapshot."""
    api = HfApi()
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="upload folder")
    return Path(snapshot_download(repo_id))


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative POSIX path -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------
# Datasets


def test_push_two_configs_with_images_and_load_them_back(hub_repo_id):
    alpha, beta = make_dataset(seed=1), make_dataset(seed=7, n_rows=2)
    alpha.push_to_hub(hub_repo_id, config_name="alpha")
    beta.push_to_hub(hub_repo_id, config_name="beta")

    assert sorted(get_dataset_config_names(hub_repo_id)) == ["alpha", "beta"]
    for name, pushed in (("alpha", alpha), ("beta", beta)):
        loaded = load_dataset(hub_repo_id, name, split="train")
        assert loaded.features == pushed.features
        assert_same_rows(list(loaded), list(pushed))


def test_load_dataset_streaming(hub_repo_id):
    pushed = make_dataset(seed=3, n_rows=4)
    pushed.push_to_hub(hub_repo_id)

    streamed = load_dataset(hub_repo_id, split="train", streaming=True)

    assert isinstance(streamed, IterableDataset)
    assert_same_rows(list(streamed), list(pushed))


def test_dataset_card_metadata_round_trip(hub_repo_id):
    metadata = {
        "license": "mit",
        "pretty_name": "Loopback card",
        "tags": ["rlaif-v", "test"],
        "task_categories": ["visual-question-answering"],
    }
    card = DatasetCard(f"---\n{json.dumps(metadata)}\n---\n\n# Loopback card\n\nSome text.\n")
    HfApi().create_repo(hub_repo_id, repo_type="dataset")
    card.push_to_hub(hub_repo_id)

    loaded = DatasetCard.load(hub_repo_id)

    assert loaded.data.to_dict() == metadata
    assert "# Loopback card" in loaded.text


# ---------------------------------------------------------------------------
# Files, folders and branches


def test_upload_folder_and_snapshot_download_are_byte_identical(hub_repo_id, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden_size": 8}))
    safetensors.torch.save_file(
        {"weight": torch.arange(24, dtype=torch.float32).reshape(4, 6)}, folder / "model.safetensors"
    )

    snapshot = upload_and_download_folder(hub_repo_id, folder)

    downloaded = files_under(snapshot)
    assert downloaded.pop(".gitattributes").startswith(b"*")  # created with the repo, like on the Hub
    assert downloaded == files_under(folder)
    (weights_info,) = HfApi().get_paths_info(hub_repo_id, ["model.safetensors"])
    assert weights_info.lfs is not None  # went through the LFS upload path


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_a_tiny_vlm_round_trips_and_loads_through_the_auto_classes(arch, hub_repo_id, tmp_path):
    folder = build_tiny_vlm(tmp_path / "model", arch=arch, preset="tiny", seed=5)
    downloaded = files_under(upload_and_download_folder(hub_repo_id, folder))
    downloaded.pop(".gitattributes")  # the repository's own file
    assert downloaded == files_under(folder)

    model = AutoModelForImageTextToText.from_pretrained(hub_repo_id)  # by Hub id, through the cache
    processor = AutoProcessor.from_pretrained(hub_repo_id)
    original = AutoModelForImageTextToText.from_pretrained(folder)
    assert model.config.model_type == arch
    for (name, loaded), (_, saved) in zip(model.state_dict().items(), original.state_dict().items()):
        assert torch.equal(loaded, saved), name
    assert processor.tokenizer.chat_template == AutoProcessor.from_pretrained(folder).tokenizer.chat_template


def test_branch_with_a_slash_upload_and_download_by_revision(hub_repo_id):
    api = HfApi()
    api.create_repo(hub_repo_id)
    api.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"on main\n", path_in_repo="notes.txt")
    branch = "exp/run-1"  # percent-encoded in every URL
    api.create_branch(hub_repo_id, branch=branch)
    api.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"on the branch\n", path_in_repo="notes.txt", revision=branch)

    assert Path(hf_hub_download(hub_repo_id, "notes.txt", revision=branch)).read_bytes() == b"on the branch\n"
    assert Path(hf_hub_download(hub_repo_id, "notes.txt")).read_bytes() == b"on main\n"
    assert {ref.name for ref in api.list_repo_refs(hub_repo_id).branches} == {"main", branch}
    assert len(api.list_repo_commits(hub_repo_id, revision=branch)) == 3  # initial, main, branch


def test_errors_become_typed_client_exceptions(hub_repo_id):
    api = HfApi()
    api.create_repo(hub_repo_id)
    api.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"x", path_in_repo="present.txt")

    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(f"{hub_repo_id}-missing")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(hub_repo_id, "present.txt", revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(hub_repo_id, "absent.txt")


def test_head_has_no_body_and_range_is_honoured(hub, hub_repo_id):
    content = bytes(range(256)) * 4
    api = HfApi()
    api.create_repo(hub_repo_id)
    api.upload_file(repo_id=hub_repo_id, path_or_fileobj=content, path_in_repo="data.bin")
    url = f"{hub.url}/{hub_repo_id}/resolve/main/data.bin"
    session = get_session()

    head = session.head(url)
    ranged = session.get(url, headers={"Range": "bytes=10-19"})  # same connection, after the HEAD
    suffix = session.get(url, headers={"Range": "bytes=-5"})

    assert head.status_code == 200 and head.content == b""
    assert head.headers["X-Linked-Size"] == str(len(content))  # binary content is stored as LFS
    assert (ranged.status_code, ranged.content) == (206, content[10:20])
    assert ranged.headers["Content-Range"] == f"bytes 10-19/{len(content)}"
    assert (suffix.status_code, suffix.content) == (206, content[-5:])


# ---------------------------------------------------------------------------
# Authentication


def test_push_with_a_wrong_token_fails_with_401(hub_repo_id):
    with pytest.raises(HfHubHTTPError) as excinfo:
        make_dataset(seed=2).push_to_hub(hub_repo_id, token="hf_wrong_token")

    assert excinfo.value.response.status_code == 401
    assert not isinstance(excinfo.value, RepositoryNotFoundError)
    assert "Invalid credentials in Authorization header" in str(excinfo.value)


def test_writing_to_another_users_repo_fails_with_403(hub, hub_repo_id):
    HfApi().create_repo(hub_repo_id)
    intruder = HfApi(token=hub.other_token)

    with pytest.raises(HfHubHTTPError) as excinfo:
        intruder.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"mine now", path_in_repo="x.txt")

    assert excinfo.value.response.status_code == 403
    assert intruder.whoami()["name"] == hub.other_user


# ---------------------------------------------------------------------------
# Fault injection


def test_injected_commit_failure_surfaces_once_then_the_next_commit_succeeds(hub, hub_repo_id):
    api = HfApi()
    api.create_repo(hub_repo_id)
    commit_path = f"/{hub_repo_id}/commit/"
    rule = hub.server.hub.inject_failures(pattern=commit_path, status=503, count=1)

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"first try", path_in_repo="a.txt")
    assert excinfo.value.response.status_code == 503
    assert rule.remaining == 0

    api.upload_file(repo_id=hub_repo_id, path_or_fileobj=b"second try", path_in_repo="a.txt")

    assert Path(hf_hub_download(hub_repo_id, "a.txt")).read_bytes() == b"second try"
    commits = [r for r in hub.server.hub.requests if commit_path in r.path]
    assert [(r.status, r.injected) for r in commits] == [(503, True), (200, False)]
    assert hub.server.hub.count_requests(commit_path, method="POST") == 2


# ---------------------------------------------------------------------------
# Network guard


def test_network_guard_refuses_a_connection_outside_loopback():
    with pytest.raises(ConnectionRefusedError, match="10.255.255.1:80"):
        socket.create_connection(("10.255.255.1", 80), timeout=1)

    assert network_guard.take_blocked() == [BlockedAttempt("connect", "10.255.255.1", 80)]


def test_network_guard_refuses_a_dns_lookup():
    with pytest.raises(socket.gaierror, match="huggingface.co"):
        socket.getaddrinfo("huggingface.co", 443)

    assert network_guard.take_blocked() == [BlockedAttempt("dns", "huggingface.co")]
    assert network_guard.blocked() == []  # so the autouse check passes this test


def test_network_guard_stops_a_client_aimed_at_the_real_hub():
    with pytest.raises(Exception, match="network_guard: refused DNS lookup of 'huggingface.co'"):
        HfApi(endpoint="https://huggingface.co").model_info("gpt2")

    assert BlockedAttempt("dns", "huggingface.co") in network_guard.take_blocked()
