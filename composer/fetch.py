"""The encoded bytes a media field names (bytes, a `datasets` value, a URL, a path), for the
image and audio load stages; URLs are fetched with a timeout and a size cap.

A record that names a URL must not hang the run (a server that never answers) or fill memory
(a multi-gigabyte file behind an innocent name): both end as an error for that record only.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

_CHUNK = 1 << 16


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
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked by is_url
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
