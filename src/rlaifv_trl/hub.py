"""Publishing a run's artifacts to the Hub: one dataset repo (a config per iteration) and one model repo (a branch
per iteration, `main` = latest).

Everything is written to a local folder first (`rlaifv_trl.artifacts`); pushing mirrors that folder, so a failed
push loses nothing and can be repeated later with `rlaifv-trl push`. Transient failures (5xx, 408, 429, timeouts,
refused connections) are retried with exponential backoff: huggingface_hub's `http_backoff` for the token check and
for the file transfers of an upload, and `with_retries` for the calls huggingface_hub sends only once (see there).
Failures are reported in one line (`failure_reason`), and tokens are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_backoff

from .artifacts import MODELS_DIR, config_name, dataset_dir, rankings_config_name
from .atomic_io import atomic_write_text
from .scoring.implicit_reward import ImplicitRewardConfig


logger = logging.getLogger(__name__)
T = TypeVar("T")


class HubAccessError(RuntimeError):
    """The token is missing, invalid or may not write where the run wants to push."""


class HubPushError(RuntimeError):
    """A push failed after every retry; the artifacts are still on disk."""


class HubUnavailableError(RuntimeError):
    """The Hub endpoint could not be reached, or kept failing, through every retry of the token check."""


@dataclass
class RetryPolicy:
    """Exponential backoff for transient Hub failures.

    Args:
        attempts: Tries in all (the first one included).
        initial_delay: Seconds before the first retry; doubled after each failure.
        max_delay: Longest wait between two tries, in seconds.
    """

    attempts: int = 5
    initial_delay: float = 2.0
    max_delay: float = 60.0

    def as_backoff(self) -> dict[str, float]:
        """The same schedule as arguments of huggingface_hub's `http_backoff`."""
        return {
            "max_retries": self.attempts - 1,
            "base_wait_time": self.initial_delay,
            "max_wait_time": self.max_delay,
        }


def is_transient(error: BaseException) -> bool:
    """Whether retrying might help: server errors, request timeouts, rate limits, timeouts and connection failures
    (what `http_backoff` retries, and any other 5xx)."""
    if isinstance(error, HfHubHTTPError):
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
        return status is None or status >= 500 or status in (408, 429)
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    transport = {"TransportError", "TimeoutException", "NetworkError", "ConnectError", "RemoteProtocolError"}
    return any(cls.__name__ in transport for cls in type(error).__mro__)


def failure_reason(error: BaseException) -> str:
    """A failed Hub request in one line: the exception type, the HTTP status and the first line of the message,
    without the token."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    status = getattr(getattr(error, "response", None), "status_code", None)
    name = type(error).__name__ if status is None or str(status) in first else f"{type(error).__name__} {status}"
    token = get_token()
    reason = f"{name}: {first}" if first else name
    return reason.replace(token, "***") if token else reason


def with_retries(action: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """Run `action`, retrying transient failures; the last failure propagates.

    For the Hub calls that huggingface_hub sends once, without its `http_backoff`: `create_repo`, `create_branch`,
    and in `upload_folder` the card check and, without hf_xet (`HF_HUB_DISABLE_XET`), the commit. Running
    `upload_folder` again resumes it: files already on the Hub are not sent again.
    """
    policy = policy or RetryPolicy()
    delay = policy.initial_delay
    for attempt in range(1, policy.attempts + 1):
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - filtered by is_transient
            if attempt == policy.attempts or not is_transient(error):
                raise
            logger.info(
                "%s failed (%s); retry %d/%d in %.1fs",
                what,
                failure_reason(error),
                attempt,
                policy.attempts - 1,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, policy.max_delay)
    raise AssertionError("unreachable")


def check_hub_access(
    repo_ids: list[str], token: str | None = None, api: HfApi | None = None, retry: RetryPolicy | None = None
) -> str:
    """Check, before any long work, that a valid token may write to every namespace in `repo_ids`.

    Returns the user name. Raises `HubAccessError` with what to do when there is no token, it is invalid, or a
    repository lies in a namespace the user cannot write to; `HubUnavailableError`, naming the endpoint, when the
    Hub cannot be reached or keeps failing (after the retries).
    """
    api = api or HfApi(token=token)
    token = token or (api.token if isinstance(api.token, str) else None) or get_token()
    if not token:
        raise HubAccessError(
            "No Hub token found. Log in with `hf auth login` or set `HF_TOKEN`; or leave the Hub repositories "
            "unset to keep the artifacts in the local output folder."
        )
    try:
        # `HfApi.whoami` asks once; `http_backoff` retries what is transient, waiting as long as a rate limit
        # (429, `Retry-After`) says, and answers a rejected token (401) at once.
        response = http_backoff(
            "GET",
            f"{api.endpoint}/api/whoami-v2",
            headers=build_hf_headers(token=token),
            **(retry or RetryPolicy()).as_backoff(),
        )
        hf_raise_for_status(response)
    except Exception as error:  # noqa: BLE001 - every failure of the check ends here, in one line
        if is_transient(error):
            raise HubUnavailableError(
                f"The Hub at {api.endpoint} is unavailable ({failure_reason(error)}); check the network connection "
                "and the endpoint (HF_ENDPOINT)."
            ) from None
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            raise HubAccessError(
                "The Hub rejected the token (401). Log in again with `hf auth login` or set a valid `HF_TOKEN`; "
                "or leave the Hub repositories unset to keep the artifacts in the local output folder."
            ) from None
        if isinstance(error, HfHubHTTPError):
            raise HubAccessError(
                f"The Hub at {api.endpoint} refused the token check ({failure_reason(error)})."
            ) from None
        raise
    identity = response.json()
    user = identity["name"]
    namespaces = {user} | {org["name"] for org in identity.get("orgs", [])}
    for repo_id in repo_ids:
        namespace = repo_id.split("/")[0] if "/" in repo_id else user
        if namespace not in namespaces:
            raise HubAccessError(f"The token of {user!r} cannot write to {repo_id!r} (namespace {namespace!r}).")
    return user


def push_later_hint(root: str | Path, dataset_repo: str | None, model_repo: str | None) -> str:
    """The command that pushes a run folder once the Hub is reachable again."""
    parts = ["rlaifv-trl push", str(root)]
    if dataset_repo:
        parts.append(f"--dataset-repo {dataset_repo}")
    if model_repo:
        parts.append(f"--model-repo {model_repo}")
    return " ".join(parts)


def push_dataset(
    root: str | Path,
    repo_id: str,
    iterations: list[int] | None = None,
    private: bool = False,
    token: str | None = None,
    retry: RetryPolicy | None = None,
    endpoint: str | None = None,
) -> str:
    """Mirror `<root>/dataset` (or only the README and the given iterations' configs, pairs and rankings) to a dataset
    repo.

    Returns the commit id. Files of a re-pushed config that no longer exist locally are deleted from the repo.
    """
    api = HfApi(endpoint=endpoint, token=token)
    folder = dataset_dir(root)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder} has no dataset card (README.md): nothing to push")
    with_retries(
        lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
        f"Creating {repo_id}",
        retry,
    )
    names = (
        [name for k in iterations for name in (config_name(k), rankings_config_name(k))]
        if iterations is not None
        else None
    )
    allow = ["README.md"] + ([f"{name}/*" for name in names] if names is not None else ["iteration-*/*"])
    delete = [f"{name}/*" for name in names] if names is not None else ["iteration-*/*"]
    message = f"Add {', '.join(names)}" if names else "Update preference data"
    commit = with_retries(
        lambda: api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            allow_patterns=allow,
            delete_patterns=delete,
            commit_message=message,
        ),
        f"Pushing the preference data to {repo_id}",
        retry,
    )
    logger.info("Pushed %s to dataset %s", message.lower(), repo_id)
    return commit.oid


def push_model(
    folder: str | Path,
    repo_id: str,
    iteration: int,
    update_main: bool = True,
    private: bool = False,
    token: str | None = None,
    retry: RetryPolicy | None = None,
    endpoint: str | None = None,
) -> str:
    """Push an iteration's model folder to branch `iteration-<k>` of `repo_id` (and to `main` with `update_main`).

    Returns the commit id on the iteration branch.
    """
    api = HfApi(endpoint=endpoint, token=token)
    branch = config_name(iteration)
    with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True), f"Creating {repo_id}", retry)
    with_retries(lambda: api.create_branch(repo_id, branch=branch, exist_ok=True), f"Creating branch {branch}", retry)
    targets = [branch] + (["main"] if update_main else [])
    commits = {}
    for revision in targets:
        commits[revision] = with_retries(
            lambda revision=revision: api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                delete_patterns=["*"],
                commit_message=f"Iteration {iteration}",
            ),
            f"Pushing the iteration {iteration} model to {repo_id}@{revision}",
            retry,
        )
    logger.info("Pushed the iteration %d model to %s (branch %s)", iteration, repo_id, branch)
    return commits[branch].oid


def push_run(
    root: str | Path,
    dataset_repo: str | None = None,
    model_repo: str | None = None,
    private: bool = False,
    token: str | None = None,
    retry: RetryPolicy | None = None,
    endpoint: str | None = None,
) -> dict[str, str]:
    """Push everything a run folder holds: its dataset (all configs) and each trained policy, `main` = latest.

    Before pushing, the run's cards and implicit-reward settings get the repositories' names: cards written without a
    Hub repository name it `local/<run folder>`, and a policy's reference that is the run's previous iteration is
    recorded as that iteration's branch.
    """
    if not dataset_repo and not model_repo:
        raise ValueError("Give a dataset repo, a model repo or both")
    api = HfApi(endpoint=endpoint, token=token)
    with pushing(root, dataset_repo, model_repo, endpoint):
        check_hub_access([repo for repo in (dataset_repo, model_repo) if repo], token=token, api=api, retry=retry)
    pushed: dict[str, str] = {}
    common = {"private": private, "token": token, "retry": retry, "endpoint": endpoint}
    with pushing(root, dataset_repo, model_repo, endpoint):
        if dataset_repo:
            _name_repository(dataset_dir(root) / "README.md", root, dataset_repo)
            pushed[f"datasets/{dataset_repo}"] = push_dataset(root, dataset_repo, **common)
        if model_repo:
            folders = trained_policies(root)
            for index, folder in enumerate(folders):
                iteration = int(folder.name.split("-")[1])
                _name_repository(folder / "README.md", root, model_repo)
                _record_hub_reference(folder, model_repo, iteration)
                latest = index == len(folders) - 1
                pushed[f"{model_repo}@{folder.name}"] = push_model(
                    folder, model_repo, iteration, update_main=latest, **common
                )
    return pushed


def trained_policies(root: str | Path) -> list[Path]:
    """The folders of the policies a run trained (`models/iteration-<k>`, k >= 1), in order."""
    folders = [
        folder
        for folder in Path(root, MODELS_DIR).glob("iteration-*")
        if folder.name.split("-")[1].isdigit() and int(folder.name.split("-")[1]) >= 1
    ]
    return sorted(folders, key=lambda folder: int(folder.name.split("-")[1]))


def _name_repository(card: Path, root: str | Path, repo_id: str) -> None:
    """Replace the placeholder `local/<run folder>` in a card with the repository it is pushed to."""
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        named = text.replace(f"local/{Path(root).name}", repo_id)
        if named != text:
            atomic_write_text(card, named)


def _record_hub_reference(folder: Path, model_repo: str, iteration: int) -> None:
    """A policy whose reference is the run's previous iteration refers to that iteration's branch too."""
    config = ImplicitRewardConfig.load(folder)
    if config is not None and config.reference_path and iteration > 1:
        config.reference_model, config.reference_revision = model_repo, config_name(iteration - 1)
        config.save(folder)


@contextmanager
def pushing(
    root: str | Path, dataset_repo: str | None, model_repo: str | None, endpoint: str | None = None
) -> Iterator[None]:
    """Turn a push that failed for good into a one-line `HubPushError` that says the data is safe and how to push
    later."""
    try:
        yield
    except (HubAccessError, FileNotFoundError, ValueError):
        raise
    except Exception as error:  # noqa: BLE001 - any failure of the Hub client ends here
        failure = (
            str(error)
            if isinstance(error, HubUnavailableError)
            else f"Pushing to the Hub at {endpoint or constants.ENDPOINT} failed ({failure_reason(error)})."
        )
        raise HubPushError(
            f"{failure} The artifacts are kept in {root}; push them later with: "
            f"{push_later_hint(root, dataset_repo, model_repo)}"
        ) from error
