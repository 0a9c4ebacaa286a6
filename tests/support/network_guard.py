"""Refuse, and record, network access outside loopback (stdlib only).

:func:`install` patches :mod:`socket` so that connecting a TCP/UDP socket to, or
resolving, anything but a loopback address (``127.0.0.0/8``, ``::1``,
``localhost``) raises :class:`NetworkAccessBlocked` (a ``ConnectionRefusedError``)
or :class:`DNSLookupBlocked` (a ``socket.gaierror``), and appends a
:class:`BlockedAttempt` to a list read with :func:`blocked`. Libraries that catch
the error still leave a record, so a test can be failed afterwards.

Covered: ``socket.socket.connect``/``connect_ex`` (hence ``create_connection``,
``http.client``, ``httpx``, ``requests``, ``asyncio``/``aiohttp``) and
``socket.getaddrinfo``/``gethostbyname``/``gethostbyname_ex``. Not covered:
native code with its own sockets (e.g. the Rust ``hf_xet``; keep it off with
``HF_HUB_DISABLE_XET=1``), subprocesses, and modules that bound
``socket.getaddrinfo`` to a name before :func:`install`, so install it first.

A test of an expected refusal removes its own records::

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("10.255.255.1", 80))
    assert [a.host for a in network_guard.take_blocked()] == ["10.255.255.1"]
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from dataclasses import dataclass
from typing import Any


__all__ = [
    "BlockedAttempt",
    "DNSLookupBlocked",
    "NetworkAccessBlocked",
    "blocked",
    "clear",
    "install",
    "is_installed",
    "is_loopback",
    "take_blocked",
    "uninstall",
]

_LOCALHOST_NAMES = {"", "localhost", "localhost.", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


@dataclass(frozen=True)
class BlockedAttempt:
    """A refused connection (``kind="connect"``) or DNS lookup (``kind="dns"``)."""

    kind: str
    host: str
    port: int | None = None

    def __str__(self) -> str:
        if self.kind == "dns":
            return f"DNS lookup of {self.host!r}"
        return f"connection to {self.host}:{self.port}"


class NetworkAccessBlocked(ConnectionRefusedError):
    """A connection outside loopback, refused by the network guard."""


class DNSLookupBlocked(socket.gaierror):
    """A DNS lookup of a name that is not loopback, refused by the network guard."""


_lock = threading.Lock()
_blocked: list[BlockedAttempt] = []
_installed = False
_TARGETS = (
    (socket.socket, "connect"),
    (socket.socket, "connect_ex"),
    (socket, "getaddrinfo"),
    (socket, "gethostbyname"),
    (socket, "gethostbyname_ex"),
)
# The real functions, and whether each is the owner's own attribute (socket.socket inherits its C methods).
_ORIGINALS = {name: getattr(owner, name) for owner, name in _TARGETS}
_OWNED = {name: name in vars(owner) for owner, name in _TARGETS}


def is_loopback(host: str | bytes | None) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine's loopback."""
    if host is None:
        return True  # getaddrinfo(None, ...): a local (passive) address
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = host.split("%", 1)[0].strip("[]").lower()  # drop an IPv6 zone and URL brackets
    if host in _LOCALHOST_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _record(attempt: BlockedAttempt) -> None:
    with _lock:
        _blocked.append(attempt)


def _refuse_connect(sock: socket.socket, address: Any) -> BlockedAttempt | None:
    """The attempt to record if ``sock`` may not connect to ``address``, else ``None``."""
    if sock.family not in _INET_FAMILIES or not isinstance(address, tuple) or is_loopback(address[0]):
        return None
    attempt = BlockedAttempt("connect", str(address[0]), int(address[1]))
    _record(attempt)
    return attempt


def _guarded_connect(self: socket.socket, address: Any) -> None:
    attempt = _refuse_connect(self, address)
    if attempt is not None:
        raise NetworkAccessBlocked(errno.ECONNREFUSED, f"network_guard: refused {attempt} (tests stay on loopback)")
    return _ORIGINALS["connect"](self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if _refuse_connect(self, address) is not None:
        return errno.ECONNREFUSED
    return _ORIGINALS["connect_ex"](self, address)


def _is_address(host: str | bytes | None) -> bool:
    """Whether ``host`` is a literal IP address (resolving it needs no DNS)."""
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _check_lookup(host: str | bytes | None) -> None:
    """Refuse resolving a name that is not loopback; literal addresses are checked at connect."""
    if not is_loopback(host) and not _is_address(host):
        name = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
        attempt = BlockedAttempt("dns", name)
        _record(attempt)
        raise DNSLookupBlocked(socket.EAI_NONAME, f"network_guard: refused {attempt} (tests stay on loopback)")


def _guarded_getaddrinfo(host: str | bytes | None, *args: Any, **kwargs: Any) -> Any:
    _check_lookup(host)
    return _ORIGINALS["getaddrinfo"](host, *args, **kwargs)


def _guarded_gethostbyname(host: str) -> str:
    _check_lookup(host)
    return _ORIGINALS["gethostbyname"](host)


def _guarded_gethostbyname_ex(host: str) -> Any:
    _check_lookup(host)
    return _ORIGINALS["gethostbyname_ex"](host)


_GUARDED = {
    "connect": _guarded_connect,
    "connect_ex": _guarded_connect_ex,
    "getaddrinfo": _guarded_getaddrinfo,
    "gethostbyname": _guarded_gethostbyname,
    "gethostbyname_ex": _guarded_gethostbyname_ex,
}


def install() -> None:
    """Start refusing network access outside loopback (idempotent)."""
    global _installed
    for owner, name in _TARGETS:
        setattr(owner, name, _GUARDED[name])
    _installed = True


def uninstall() -> None:
    """Restore the original :mod:`socket` functions (idempotent); the records are kept."""
    global _installed
    for owner, name in _TARGETS:
        if _OWNED[name]:
            setattr(owner, name, _ORIGINALS[name])
        elif name in vars(owner):
            delattr(owner, name)
    _installed = False


def is_installed() -> bool:
    return _installed


def blocked() -> list[BlockedAttempt]:
    """The refused attempts recorded so far (a copy), oldest first."""
    with _lock:
        return list(_blocked)


def take_blocked() -> list[BlockedAttempt]:
    """The refused attempts recorded so far, removing them from the record."""
    with _lock:
        taken = list(_blocked)
        _blocked.clear()
    return taken


def clear() -> None:
    """Forget every recorded attempt."""
    take_blocked()
