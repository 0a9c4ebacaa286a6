"""An in-memory, Hugging Face Hub-compatible HTTP server for tests (stdlib only).

It implements the part of the Hub HTTP API that ``huggingface_hub`` 2.x and
``datasets`` 5.x use to create repositories, push and load datasets, upload and
download folders, and work with branches and tags:

- ``GET /api/whoami-v2``, ``POST /api/validate-yaml``,
  ``POST /api/repos/create`` (409 if it exists), ``DELETE /api/repos/delete``;
- under ``/api/{models,datasets,spaces}/{ns}/{name}``: repository info
  (``[/revision/{rev}]``), ``preupload/{rev}``, ``commit/{rev}`` (ndjson),
  ``tree/{rev}[/{path}]``, ``paths-info/{rev}``, ``refs``, ``commits/{rev}``,
  ``branch/{name}`` (POST, DELETE), ``tag/{rev}`` (POST) and ``tag/{name}`` (DELETE);
- ``POST /[datasets/|spaces/]{ns}/{name}.git/info/lfs/objects/batch`` (basic
  transfer) with the upload (``PUT /lfs-upload/{sha256}``) and verify
  (``POST /lfs-verify``) actions it hands out;
- ``HEAD``/``GET /[datasets/|spaces/]{ns}/{name}/resolve/{rev}/{path}`` with
  ``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``/``X-Linked-Size`` and ``Range``.

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``) and ``X-Error-Message``, which the clients turn into their
typed exceptions. Tokens map to user names; a user may write only to repositories
under their own name. Not implemented: xet (clients need ``HF_HUB_DISABLE_XET=1``),
multipart LFS, pull requests, organizations, pagination, persistence.

For fault-injection tests, :meth:`HubState.inject_failures` makes the next
requests matching a path substring fail, and :attr:`HubState.requests` logs every
request::

    server, url = start_hub_server(tokens={"hf_token": "alice"})
    server.hub.inject_failures(pattern="/commit/", status=503, count=2)
    ...
    assert server.hub.count_requests("/commit/", method="POST") == 3
    server.stop()
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


__all__ = [
    "FailureRule",
    "HubError",
    "HubServer",
    "HubState",
    "RequestRecord",
    "LoopbackHub",
    "client_environment",
    "start_hub_server",
    "start_loopback_hub",
]

# URL segment of each repository type in the API, and its prefix in file URLs.
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}

# Files stored through LFS, like the Hub's default .gitattributes. ``datasets``
# relies on parquet shards being LFS: it deletes them right after uploading.
LFS_EXTENSIONS = tuple(
    ".parquet .arrow .safetensors .bin .pt .pth .ckpt .h5 .onnx .msgpack .npy .npz .pkl .pickle .model"
    " .zip .gz .tar .png .jpg .jpeg .webp".split()
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS).encode()

INVALID_TOKEN_MESSAGE = "Invalid credentials in Authorization header"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# ---------------------------------------------------------------------------
# Small helpers


def _now() -> str:
    """The current UTC time in the Hub's ISO 8601 format."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _new_oid() -> str:
    """A fresh 40-hex-digit commit id."""
    return hashlib.sha1(uuid.uuid4().bytes).hexdigest()


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git LFS pointer file stored in git in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _is_true(values: list[str] | None) -> bool:
    """Whether the first value of a query or form parameter is true-ish."""
    return bool(values) and values[0].strip().lower() in ("1", "true", "yes")


def _header_text(text: str) -> str:
    """``text`` made safe for an HTTP header value (one latin-1 line)."""
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")


# Variables that would send the clients' caches, token file or requests elsewhere, or keep them offline.
_CLIENT_VARIABLES_TO_UNSET = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HF_TOKEN_PATH",
    "HF_MODULES_CACHE",
    "HF_DATASETS_DOWNLOADED_DATASETS_PATH",
    "HF_DATASETS_EXTRACTED_DATASETS_PATH",
    "HUGGINGFACE_CO_STAGING",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
    "HF_HUB_ENABLE_HF_TRANSFER",
)


def client_environment(url: str, token: str, home: str) -> dict[str, str | None]:
    """Environment variables pointing huggingface_hub and datasets at ``url``.

    Set them before either library is imported: both read them at import time.
    ``None`` means "unset" (see ``_CLIENT_VARIABLES_TO_UNSET``). After importing
    datasets, also set ``datasets.config.USE_PARQUET_EXPORT = False``, or it asks
    ``datasets-server.<host>``, which is not loopback.
    """
    return {
        "HF_ENDPOINT": url,
        "HF_TOKEN": token,
        "HF_HOME": home,
        "HF_DATASETS_CACHE": os.path.join(home, "datasets"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
        **dict.fromkeys(_CLIENT_VARIABLES_TO_UNSET),
    }


class HubError(Exception):
    """An error answered to the client as ``status`` with a JSON body."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


def _repo_not_found(user: str | None) -> HubError:
    # Like the Hub: 401 for anonymous requests, 404 otherwise; never says whether a private repo exists.
    return HubError(404 if user else 401, "Repository not found", "RepoNotFound")


def _revision_not_found(rev: str) -> HubError:
    return HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


def _entry_not_found(path: str, commit: str | None = None) -> HubError:
    headers = {"X-Repo-Commit": commit} if commit else None
    return HubError(404, f"Entry not found: {path}", "EntryNotFound", headers)


# ---------------------------------------------------------------------------
# Repositories


@dataclass(frozen=True)
class FileEntry:
    """A file in a commit; its bytes live in :attr:`HubState.blobs` under ``sha256``."""

    sha256: str
    size: int
    git_oid: str
    lfs: bool

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    def to_json(self, path: str, last_commit: Commit | None = None) -> dict[str, Any]:
        """The entry as listed by the tree and paths-info endpoints."""
        out: dict[str, Any] = {"type": "file", "oid": self.git_oid, "size": self.size, "path": path}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        if last_commit is not None:
            out["lastCommit"] = {"id": last_commit.oid, "title": last_commit.title, "date": last_commit.date}
        return out


@dataclass
class Commit:
    """A snapshot of a repository: the whole file table, not a diff."""

    oid: str
    parent: str | None
    files: dict[str, FileEntry]
    title: str
    message: str
    author: str
    date: str = field(default_factory=_now)

    def directories(self) -> set[str]:
        """Every directory that holds at least one file."""
        out = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return out


@dataclass
class Repo:
    """A repository: commits, branches and tags."""

    type: str
    id: str
    private: bool
    created: str = field(default_factory=_now)
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.id.split("/")[0]

    @property
    def url_path(self) -> str:
        """The repository's path in file URLs, e.g. ``datasets/alice/data``."""
        return URL_PREFIXES[self.type] + self.id

    def resolve(self, rev: str) -> Commit:
        """The commit a branch, tag or commit id points to."""
        oid = self.branches.get(rev) or self.tags.get(rev) or rev
        if oid not in self.commits:
            raise _revision_not_found(rev)
        return self.commits[oid]

    def head(self, branch: str) -> Commit:
        """The last commit of ``branch`` (commits go to branches only)."""
        if branch not in self.branches:
            raise _revision_not_found(branch)
        return self.commits[self.branches[branch]]

    def add_commit(self, branch: str, files: dict[str, FileEntry], title: str, message: str, author: str) -> Commit:
        """Record a new snapshot on top of ``branch`` and move the branch to it."""
        parent = self.branches.get(branch)
        commit = Commit(_new_oid(), parent, files, title, message, author)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


# ---------------------------------------------------------------------------
# Server state: repositories, blobs, tokens, request log, injected failures


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, as logged in :attr:`HubState.requests`."""

    method: str
    path: str  # the raw request target: percent-encoded path and query string
    status: int
    injected: bool = False  # answered by an injected failure


@dataclass
class FailureRule:
    """Answer the next ``remaining`` requests matching ``pattern`` with ``status``."""

    pattern: str
    status: int
    remaining: int
    method: str | None = None
    message: str = "Injected failure"
    headers: Mapping[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and self.pattern in path and self.method in (None, method)


class HubState:
    """Everything the server holds. Thread-safe: handlers take :attr:`lock`."""

    def __init__(self, tokens: Mapping[str, str]):
        self.tokens = dict(tokens)  # token -> user name
        self.repos: dict[tuple[str, str], Repo] = {}  # (repo type, repo id) -> repo
        self.blobs: dict[str, bytes] = {}  # sha256 -> content, for every file
        self.lock = threading.RLock()
        self.requests: list[RequestRecord] = []
        self.internal_errors: list[str] = []  # tracebacks of requests answered with 500
        self._failures: list[FailureRule] = []

    # -- users and content

    def user_for(self, token: str | None) -> str | None:
        """The user a token belongs to; ``None`` without a token; 401 for an unknown one."""
        if token is None:
            return None
        if token not in self.tokens:
            raise HubError(401, INVALID_TOKEN_MESSAGE)
        return self.tokens[token]

    def store(self, data: bytes, lfs: bool) -> FileEntry:
        """Keep ``data`` and describe it as a file entry."""
        sha256 = hashlib.sha256(data).hexdigest()
        with self.lock:
            self.blobs[sha256] = data
        git_oid = git_blob_oid(lfs_pointer(sha256, len(data)) if lfs else data)
        return FileEntry(sha256, len(data), git_oid, lfs)

    def read(self, entry: FileEntry) -> bytes:
        return self.blobs[entry.sha256]

    def new_repo(self, repo_type: str, repo_id: str, private: bool, author: str) -> Repo:
        """A repository whose first commit holds a default ``.gitattributes``."""
        repo = Repo(repo_type, repo_id, private)
        files = {".gitattributes": self.store(GITATTRIBUTES, lfs=False)}
        repo.add_commit("main", files, "initial commit", "", author)
        return repo

    # -- fault injection

    def inject_failures(
        self,
        pattern: str,
        status: int = 503,
        count: int = 1,
        *,
        method: str | None = None,
        message: str = "Injected failure",
        headers: Mapping[str, str] | None = None,
    ) -> FailureRule:
        """Make the next ``count`` requests whose target contains ``pattern`` fail.

        ``pattern`` is a plain substring of the raw (percent-encoded) request target,
        e.g. ``"/commit/"`` or ``"/resolve/"``; ``method`` (e.g. ``"POST"``) narrows it.
        The failure is a JSON error with ``X-Error-Message: message`` and no
        ``X-Error-Code``, plus ``headers`` (e.g. ``{"Retry-After": "1"}``). Rules are used
        in the order they were added; the returned rule's ``remaining`` counts down to 0.
        """
        rule = FailureRule(pattern, status, count, method.upper() if method else None, message, dict(headers or {}))
        with self.lock:
            self._failures.append(rule)
        return rule

    def clear_failures(self) -> None:
        """Drop every pending injected failure."""
        with self.lock:
            self._failures.clear()

    def take_failure(self, method: str, path: str) -> FailureRule | None:
        """Use up one injected failure matching this request, if any."""
        with self.lock:
            for rule in self._failures:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    return rule
            return None

    # -- request log

    def record(self, record: RequestRecord) -> None:
        with self.lock:
            self.requests.append(record)

    def count_requests(self, pattern: str = "", method: str | None = None) -> int:
        """How many logged requests have ``pattern`` in their target (and ``method``)."""
        with self.lock:
            return sum(1 for r in self.requests if pattern in r.path and method in (None, r.method))

    def clear_request_log(self) -> None:
        """Forget the logged requests and internal errors."""
        with self.lock:
            self.requests.clear()
            self.internal_errors.clear()


# ---------------------------------------------------------------------------
# HTTP layer

Endpoint = Callable[["HubRequestHandler", dict[str, str], dict[str, list[str]]], None]


@dataclass(frozen=True)
class Route:
    """An endpoint and the requests it answers."""

    methods: frozenset[str]
    pattern: re.Pattern[str]
    endpoint: Endpoint


_ROUTES: list[Route] = []
_API_REPO = r"/api/(?P<types>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
_FILE_REPO = r"/(?:(?P<types>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+?)"


def route(methods: str, pattern: str) -> Callable[[Endpoint], Endpoint]:
    """Register an endpoint for space-separated ``methods`` and a full-path regex.

    The regex runs on the raw path; named groups reach the endpoint percent-decoded.
    """

    def register(endpoint: Endpoint) -> Endpoint:
        _ROUTES.append(Route(frozenset(methods.split()), re.compile(pattern), endpoint))
        return endpoint

    return register


class HubRequestHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests from ``self.server.hub``."""

    protocol_version = "HTTP/1.1"
    server_version = "rlaifv-trl-test-hub/1.0"
    server: HubServer
    body = b""  # the request body, read before routing
    _injected = False  # whether the current request was answered by an injected failure

    # -- plumbing

    @property
    def hub(self) -> HubState:
        return self.server.hub

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Record the answered request in :attr:`HubState.requests`."""
        status = int(code) if str(code).isdigit() else 0
        self.hub.record(RequestRecord(self.command, self.path, status, self._injected))

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests go to the in-memory log instead (see :meth:`log_request`)."""

    def _handle(self) -> None:
        self._injected = False
        # Always drain the body, even when refusing: the connection is kept alive.
        self.body = self._read_body()
        try:
            rule = self.hub.take_failure(self.command, self.path)
            if rule is not None:
                self._injected = True
                raise HubError(rule.status, rule.message, headers=rule.headers)
            self._route()
        except HubError as error:
            self._send_error(error)
        except Exception as exc:  # a bug in this server: answer 500 and keep the traceback
            self.hub.internal_errors.append(traceback.format_exc())
            self._send_error(HubError(500, f"Test hub internal error: {type(exc).__name__}: {exc}"))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            out += self.rfile.read(size)
            self.rfile.readline()  # the CRLF after each chunk
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return bytes(out)

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a response; a HEAD reply gets the same headers and no body."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _send_error(self, error: HubError) -> None:
        headers = {**error.headers, "X-Error-Message": _header_text(error.message)}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send_json({"error": error.message}, error.status, headers)

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise HubError(400, "Request body is not valid JSON") from None

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host') or self.server.host_port}"

    def _route(self) -> None:
        target = urlsplit(self.path)
        query = parse_qs(target.query)
        for candidate in _ROUTES:
            match = candidate.pattern.fullmatch(target.path)
            if match and self.command in candidate.methods:
                args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                return candidate.endpoint(self, args, query)
        raise HubError(404, f"Not found: {self.command} {target.path}")

    # -- authentication and access

    def _user(self, required: bool = False) -> str | None:
        """The user behind the request's token; 401 if ``required`` and there is none."""
        auth = self.headers.get("Authorization", "")
        token = auth[len("bearer ") :].strip() if auth.lower().startswith("bearer ") else None
        user = self.hub.user_for(token)
        if user is None and required:
            raise HubError(401, "You must be authenticated (send a token) to access this endpoint")
        return user

    def _repo(self, args: dict[str, str], write: bool = False) -> tuple[Repo, str | None]:
        """The repository named by the route, checking read or write access."""
        repo_type = REPO_TYPES[args.get("types", "models")]
        repo_id = f"{args['ns']}/{args['name']}"
        user = self._user(required=write)
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and repo.owner != user):
            raise _repo_not_found(user)
        if write and repo.owner != user:
            raise HubError(403, f"You don't have the rights to write to {repo_type} repo {repo_id} (user {user})")
        return repo, user

    # -- account and repository management

    @route("GET", r"/api/whoami-v2")
    def whoami(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        user = self._user(required=True)
        self._send_json(
            {
                "type": "user",
                "name": user,
                "fullname": user,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    @route("POST", r"/api/validate-yaml")
    def validate_yaml(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        self._send_json({"errors": [], "warnings": []})

    @route("POST", r"/api/repos/create")
    def create_repo(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        user = self._user(required=True)
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or user
        name = str(payload.get("name", ""))
        if repo_type not in URL_PREFIXES or not _NAME_RE.fullmatch(name):
            raise HubError(400, f"Invalid repo type or name: {repo_type!r}, {name!r}")
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repo under the namespace {namespace!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{self._base_url()}/{URL_PREFIXES[repo_type]}{repo_id}"
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                message = "You already created this repo"
                return self._send_json({"error": message, "url": url}, 409, {"X-Error-Message": message})
            self.hub.repos[(repo_type, repo_id)] = self.hub.new_repo(repo_type, repo_id, private, user)
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    @route("DELETE", r"/api/repos/delete")
    def delete_repo(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        payload = self._json_body()
        user = self._user(required=True)
        repo_type = payload.get("type") or "model"
        key = (repo_type, f"{payload.get('organization') or user}/{payload.get('name')}")
        with self.hub.lock:
            repo = self.hub.repos.get(key)
            if repo is None or (repo.private and repo.owner != user):
                raise _repo_not_found(user)
            if repo.owner != user:
                raise HubError(403, f"You don't have the rights to delete {repo.id}")
            del self.hub.repos[key]
        self._send(200, b"", "text/plain")

    @route("GET", _API_REPO + r"(?:/revision/(?P<rev>[^/]+))?")
    def repo_info(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        with self.hub.lock:
            repo, _ = self._repo(args)
            commit = repo.resolve(args.get("rev", "main"))
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if _is_true(query.get("blobs")):
                sibling.update(size=entry.size, blobId=entry.git_oid)
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        self._send_json(
            {
                "_id": hashlib.md5(f"{repo.type}/{repo.id}".encode()).hexdigest()[:24],
                "id": repo.id,
                "author": repo.owner,
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.created,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
            }
        )

    # -- uploads

    @route("POST", _API_REPO + r"/preupload/(?P<rev>[^/]+)")
    def preupload(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        with self.hub.lock:
            repo, _ = self._repo(args, write=True)
            files = repo.resolve(args["rev"]).files
        out = []
        for item in self._json_body().get("files", []):
            path = item["path"]
            lfs = (
                item["size"] >= LFS_SIZE_THRESHOLD
                or path.lower().endswith(LFS_EXTENSIONS)
                or b"\0" in base64.b64decode(item.get("sample", ""))
            )
            existing = files.get(path)
            # The client skips unchanged files by comparing this oid to its own sha256 (LFS) or git oid.
            oid = None if existing is None else existing.sha256 if existing.lfs else existing.git_oid
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send_json({"files": out, "commitOid": repo.branches.get(args["rev"])})

    @route("POST", _FILE_REPO + r"\.git/info/lfs/objects/batch")
    def lfs_batch(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        with self.hub.lock:
            self._repo(args, write=True)
        objects = []
        for item in self._json_body().get("objects", []):
            obj: dict[str, Any] = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.hub.blobs:
                obj["actions"] = {
                    "upload": {"href": f"{self._base_url()}/lfs-upload/{item['oid']}", "header": {}},
                    "verify": {"href": f"{self._base_url()}/lfs-verify", "header": {}},
                }
            objects.append(obj)
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        self._send(200, body, "application/vnd.git-lfs+json")

    @route("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})")
    def lfs_upload(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        if hashlib.sha256(self.body).hexdigest() != args["oid"]:
            raise HubError(400, "The uploaded content does not match its sha256")
        self.hub.store(self.body, lfs=True)
        self._send(200, b"", "text/plain")

    @route("POST", r"/lfs-verify")
    def lfs_verify(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        payload = self._json_body()
        blob = self.hub.blobs.get(payload.get("oid", ""))
        if blob is None or len(blob) != payload.get("size"):
            raise HubError(404, f"LFS object {payload.get('oid')} was not uploaded")
        self._send_json({})

    @route("POST", _API_REPO + r"/commit/(?P<rev>[^/]+)")
    def commit(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        if _is_true(query.get("create_pr")):
            raise HubError(501, "Pull requests are not supported by the test hub")
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except ValueError:
            raise HubError(400, "The commit payload is not valid ndjson") from None
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        with self.hub.lock:
            repo, user = self._repo(args, write=True)
            parent = repo.head(args["rev"])
            if header.get("parentCommit") not in (None, parent.oid):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(parent.files)
            for line in lines:
                self._apply_operation(files, line["key"], line["value"])
            commit = repo.add_commit(
                args["rev"], files, header.get("summary", ""), header.get("description", ""), user
            )
        url = f"{self._base_url()}/{repo.url_path}/commit/{commit.oid}"
        self._send_json({"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

    def _apply_operation(self, files: dict[str, FileEntry], key: str, value: dict[str, Any]) -> None:
        """Apply one ndjson line of a commit to the file table."""
        if key == "file":
            files[value["path"]] = self.hub.store(base64.b64decode(value["content"]), lfs=False)
        elif key == "lfsFile":
            blob = self.hub.blobs.get(value["oid"])
            if blob is None:
                raise HubError(400, f"LFS object {value['oid']} of {value['path']} was not uploaded")
            files[value["path"]] = self.hub.store(blob, lfs=True)
        elif key == "deletedFile":
            if files.pop(value["path"], None) is None:
                raise _entry_not_found(f"{value['path']}: A file with this name doesn't exist")
        elif key == "deletedFolder":
            prefix = value["path"].rstrip("/") + "/"
            for path in [path for path in files if path.startswith(prefix)]:
                del files[path]
        elif key != "header":
            raise HubError(400, f"Unsupported commit operation: {key}")

    # -- listing

    @route("GET", _API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?")
    def tree(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        with self.hub.lock:
            repo, _ = self._repo(args)
            commit = repo.resolve(args["rev"])
        base = args.get("path", "").strip("/")
        directories = commit.directories()
        if base and base not in directories:
            raise _entry_not_found(base, commit.oid)
        prefix = f"{base}/" if base else ""
        recursive = _is_true(query.get("recursive"))

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        last_commit = commit if _is_true(query.get("expand")) else None
        out = [_directory_json(d) for d in sorted(directories) if listed(d)]
        out += [entry.to_json(p, last_commit) for p, entry in sorted(commit.files.items()) if listed(p)]
        self._send_json(out)

    @route("POST", _API_REPO + r"/paths-info/(?P<rev>[^/]+)")
    def paths_info(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        with self.hub.lock:
            repo, _ = self._repo(args)
            commit = repo.resolve(args["rev"])
        form = parse_qs(self.body.decode())
        last_commit = commit if _is_true(form.get("expand")) else None
        directories = commit.directories()
        out = []
        for path in (p.strip("/") for p in form.get("paths", [])):
            if path in commit.files:
                out.append(commit.files[path].to_json(path, last_commit))
            elif path in directories:
                out.append(_directory_json(path))
        self._send_json(out)

    @route("GET", _API_REPO + r"/commits/(?P<rev>[^/]+)")
    def list_commits(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        out = []
        with self.hub.lock:
            repo, _ = self._repo(args)
            commit: Commit | None = repo.resolve(args["rev"])
            while commit is not None:
                out.append(
                    {
                        "id": commit.oid,
                        "title": commit.title,
                        "message": commit.message,
                        "date": commit.date,
                        "authors": [{"user": commit.author}],
                    }
                )
                commit = repo.commits.get(commit.parent or "")
        self._send_json(out)

    # -- branches and tags

    @route("GET", _API_REPO + r"/refs")
    def refs(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        with self.hub.lock:
            repo, _ = self._repo(args)
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()]
            tags = [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in repo.tags.items()]
        self._send_json({"branches": branches, "tags": tags, "converts": [], "pullRequests": []})

    @route("POST", _API_REPO + r"/branch/(?P<branch>.+)")
    def create_branch(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        payload = self._json_body()
        with self.hub.lock:
            repo, _ = self._repo(args, write=True)
            start = repo.resolve(payload.get("startingPoint") or "main")
            if args["branch"] in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{args['branch']}")
            repo.branches[args["branch"]] = start.oid
        self._send_json({})

    @route("DELETE", _API_REPO + r"/branch/(?P<branch>.+)")
    def delete_branch(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        with self.hub.lock:
            repo, _ = self._repo(args, write=True)
            if args["branch"] == "main" or repo.branches.pop(args["branch"], None) is None:
                raise _revision_not_found(args["branch"])
        self._send_json({})

    @route("POST", _API_REPO + r"/tag/(?P<rev>[^/]+)")
    def create_tag(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        tag = self._json_body().get("tag", "")
        with self.hub.lock:
            repo, _ = self._repo(args, write=True)
            commit = repo.resolve(args["rev"])
            if not tag or tag in repo.tags:
                raise HubError(409, f"Tag {tag!r} is empty or already exists")
            repo.tags[tag] = commit.oid
        self._send_json({})

    @route("DELETE", _API_REPO + r"/tag/(?P<tag>[^/]+)")
    def delete_tag(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        with self.hub.lock:
            repo, _ = self._repo(args, write=True)
            if repo.tags.pop(args["tag"], None) is None:
                raise _revision_not_found(args["tag"])
        self._send_json({})

    # -- downloads

    @route("GET HEAD", _FILE_REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)")
    def resolve(self, args: dict[str, str], query: dict[str, list[str]]) -> None:
        with self.hub.lock:
            repo, _ = self._repo(args)
            commit = repo.resolve(args["rev"])
            entry = commit.files.get(args["path"])
            if entry is None:
                raise _entry_not_found(args["path"], commit.oid)
            data = self.hub.read(entry)
        etag = f'"{entry.sha256 if entry.lfs else entry.git_oid}"'
        headers = {"X-Repo-Commit": commit.oid, "ETag": etag, "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(entry.size)})
        byte_range = _parse_range(self.headers.get("Range"), len(data)) if self.command == "GET" else None
        if byte_range is None:
            return self._send(200, data, "application/octet-stream", headers)
        start, end = byte_range
        if start >= len(data):
            raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(206, data[start : end + 1], "application/octet-stream", headers)


def _directory_json(path: str) -> dict[str, Any]:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (inclusive) of a single-range ``Range`` header, else ``None``.

    ``start >= size`` means unsatisfiable. Multiple ranges are ignored (whole file).
    """
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix range: the last N bytes
        return max(0, size - int(last)), size - 1
    return int(first), min(int(last) if last else size - 1, size - 1)


# ---------------------------------------------------------------------------
# Server


class HubServer(ThreadingHTTPServer):
    """The HTTP server; :attr:`hub` holds its state, :attr:`url` its base URL."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tokens: Mapping[str, str]):
        super().__init__((host, port), HubRequestHandler)
        self.hub = HubState(tokens)
        self._thread: threading.Thread | None = None

    @property
    def host_port(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="test-hub-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()


def start_hub_server(tokens: Mapping[str, str], host: str = "127.0.0.1", port: int = 0) -> tuple[HubServer, str]:
    """Start a server (``port=0``: a free one) in a daemon thread; return it and its URL."""
    server = HubServer(host, port, tokens=tokens)
    server.start()
    return server, server.url


# ---------------------------------------------------------------------------
# Client side: one hub per test session


@dataclass(frozen=True)
class LoopbackHub:
    """A running test hub, the two users it knows, and the clients' temporary ``HF_HOME``."""

    server: HubServer
    url: str
    user: str
    token: str = field(repr=False)
    other_user: str
    other_token: str = field(repr=False)
    home: str

    def stop(self) -> None:
        """Stop the server and delete the temporary ``HF_HOME``."""
        self.server.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def start_loopback_hub(
    user: str = "rlaifv-tester",
    token: str = "hf_rlaifv_trl_test_token",
    other_user: str = "rlaifv-other",
    other_token: str = "hf_rlaifv_trl_other_token",
) -> LoopbackHub:
    """Start a hub on 127.0.0.1 and point the clients at it through ``os.environ``.

    Call it before importing huggingface_hub or datasets (see :func:`client_environment`).
    ``token`` becomes the clients' default token (``HF_TOKEN``); ``other_token``
    belongs to a second user, for tests of writes to someone else's namespace.
    """
    server, url = start_hub_server(tokens={token: user, other_token: other_user})
    home = tempfile.mkdtemp(prefix="rlaifv-trl-test-hf-home-")
    for name, value in client_environment(url, token, home).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return LoopbackHub(server, url, user, token, other_user, other_token, home)
