"""The encoded bytes a media field names (bytes, a `datasets` value, a URL, a path), for the
image and audio load stages; URLs are fetched with a timeout and a size cap.

A record that names a URL must not hang the run (a server that never answers) or fill memory
(a multi-gigabyte file behind an innocent name): both end as an error for that record only.

A server fetching for its callers also sets an address guard (guard_addresses): every connection
a fetch makes, redirects included, is checked against it at connect time, on the very addresses
it connects to. Checking the URL's host beforehand is not enough: a redirect can point inside the
network, and a host can resolve to a public address for the check and to an internal one for the
fetch (DNS rebinding).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CHUNK = 1 << 16

AddressGuard = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], str | None]  # why not to connect there, or None
_guard: AddressGuard | None = None


def guard_addresses(guard: AddressGuard | None) -> None:
    """Check every address a fetch connects to with `guard` from now on (None: no check), for the
    whole process: `composer serve` sets it while it serves."""
    global _guard
    _guard = guard


def _guarded_connection(address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
                        source_address: Any = None, **_: Any) -> socket.socket:
    """socket.create_connection, refusing each resolved address the guard refuses, so the address
    checked is the address connected to."""
    host, port = address
    guard = _guard
    last: OSError | None = None
    for family, kind, proto, _name, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        why = guard(ip) if guard is not None else None
        if why:
            last = ConnectionRefusedError(f"host {host!r} is {why} address {ip}: not fetched (a server does not fetch inside its network)")
            continue
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as error:
            sock.close()
            last = error
    raise last or OSError(f"host {host!r} has no address")


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _guarded_connection


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _guarded_connection


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_GuardedHTTPSConnection, req)


def _open(request: urllib.request.Request, timeout: float) -> Any:
    """urlopen, through guarded connections while a guard is set (redirects follow through them too)."""
    if _guard is None:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only, checked by is_url
    return urllib.request.build_opener(_GuardedHTTPHandler, _GuardedHTTPSHandler).open(request, timeout=timeout)


class FetchError(OSError):
    """The URL could not be fetched within the limits; the message names the URL and the cause."""


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def fetch_bytes(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """The body of `url`; FetchError on an HTTP error, more than `max_bytes`, or a timeout.

    `timeout` bounds the whole fetch, not only each socket read: a server that trickles bytes
    would otherwise pass a per-read timeout forever.
    """
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": "pipeline-composer"})
    try:
        with _open(request, timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"{url}: {int(declared)} bytes exceeds the cap of {max_bytes} (max_bytes)")
            body = bytearray()
            # read1 returns what has arrived (read() waits for a full chunk), so the deadline is
            # checked at least once per socket timeout even when the server trickles bytes.
            while chunk := response.read1(_CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"{url}: more than {max_bytes} bytes (max_bytes)")
                if time.monotonic() > deadline:
                    raise TimeoutError
            return bytes(body)
    except FetchError:
        raise
    except urllib.error.HTTPError as error:
        raise FetchError(f"{url}: HTTP {error.code} {error.reason}") from None
    except TimeoutError:
        raise FetchError(f"{url}: no answer within {timeout} s (timeout)") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise FetchError(f"{url}: no answer within {timeout} s (timeout)") from None
        raise FetchError(f"{url}: {reason}") from None


def media_bytes(value: Any, *, source: str, timeout: float, max_bytes: int, expected: str) -> bytes:
    """The encoded file a media field holds: raw bytes, an undecoded `datasets` Image/Audio value
    ({bytes, path}), an http(s) URL (fetched when `source` is url, or auto and it looks like one)
    or a local path. `expected` names the accepted forms in the TypeError for anything else."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        return value["bytes"] or Path(value["path"]).expanduser().read_bytes()
    if not isinstance(value, str):
        raise TypeError(f"expected {expected}, got {type(value).__name__}")
    if source == "url" or (source == "auto" and is_url(value)):
        if not is_url(value):
            raise ValueError(f"not an http(s) URL: {value[:80]!r}")
        return fetch_bytes(value, timeout=timeout, max_bytes=max_bytes)
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {value}")
    return path.read_bytes()
