"""Request bodies -> records, or the refusal that names what is wrong, before anything is queued:
413 for a body over serve.max_body_bytes (by its Content-Length, or as it arrives), 422 for a
body that is not JSON, not an object (or a list of them, or JSON lines of them), or holds a row
the run's source would refuse (a missing field, a value of the wrong type: its own message,
naming the field), or a media field the server may not read (a URL unless serve.allow_urls,
a private address, a path on the server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from composer.fetch import is_url
from composer.records import Record, RecordFailure
from composer.serve.addresses import refused_url


@dataclass
class Issue:
    where: str  # body, body[2], line 3
    message: str
    field: str | None = None

    def json(self) -> dict[str, Any]:
        return {"where": self.where, "field": self.field, "message": self.message}


@dataclass
class BodyRefused(Exception):
    status: int
    message: str
    issues: list[Issue] = field(default_factory=list)
    failures: list[RecordFailure] = field(default_factory=list)  # the rows the source refused (errors.jsonl)

    def json(self) -> dict[str, Any]:
        return {"error": self.message, "issues": [issue.json() for issue in self.issues]}


async def read_limited(headers: Any, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyRefused(413, f"the body has {int(declared)} bytes; this server takes at most {limit} (serve.max_body_bytes)")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise BodyRefused(413, f"the body exceeds {limit} bytes (serve.max_body_bytes)")
    return bytes(body)


def predict_rows(body: bytes) -> tuple[list[tuple[str, Any]], bool]:
    """(position, row) for a JSON object or a list of them, and whether it was one object."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BodyRefused(422, f"the body is not JSON: {error}", [Issue("body", str(error))]) from None
    except RecursionError:
        raise BodyRefused(422, "the body is nested too deeply to read", [Issue("body", "nested too deeply")]) from None
    if isinstance(value, dict):
        return [("body", value)], True
    if isinstance(value, list):
        if not value:
            raise BodyRefused(422, "the body is an empty list: send a record (a JSON object) or a list of them", [Issue("body", "empty list")])
        wrong = [Issue(f"body[{i}]", f"expected a JSON object (a record), got {_kind(item)}") for i, item in enumerate(value)
                 if not isinstance(item, dict)]
        if wrong:
            raise BodyRefused(422, "every item of the list must be a record (a JSON object)", wrong)
        return [(f"body[{i}]", item) for i, item in enumerate(value)], False
    raise BodyRefused(422, f"the body must be a record (a JSON object) or a list of them, got {_kind(value)}",
                      [Issue("body", f"expected a JSON object, got {_kind(value)}")])


def stream_rows(body: bytes) -> list[tuple[str, Any]]:
    """(position, row) for each non-blank line of JSON lines; every bad line is named."""
    rows, issues = [], []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            issues.append(Issue(f"line {number}", f"not JSON: {error}"))
            continue
        except RecursionError:
            issues.append(Issue(f"line {number}", "nested too deeply to read"))
            continue
        if not isinstance(value, dict):
            issues.append(Issue(f"line {number}", f"expected a JSON object (a record), got {_kind(value)}"))
            continue
        rows.append((f"line {number}", value))
    if issues:
        raise BodyRefused(422, "every line must be a record (a JSON object)", issues)
    if not rows:
        raise BodyRefused(422, "the body holds no records: send one JSON object per line", [Issue("body", "no lines")])
    return rows


def accepted(made: list[Record | RecordFailure], positions: list[str]) -> list[Record]:
    """The records, or 422 naming every row the source refused (its message names the field)."""
    failures = [(where, item) for where, item in zip(positions, made) if isinstance(item, RecordFailure)]
    if failures:
        issues = [Issue(where, failure.message, _named_field(failure.message)) for where, failure in failures]
        raise BodyRefused(422, "some records cannot be read as this config's input", issues, [f for _, f in failures])
    return [item for item in made if not isinstance(item, RecordFailure)]


async def check_media(records: list[Record], media: dict[str, bool], allow_urls: bool, positions: list[str]) -> None:
    """422 for a media field the server may not read for a caller: a URL unless allowed (and then
    never a private, link-local or loopback address), or a string the reading stage would take
    as a path on this machine. Hosts are resolved off the event loop."""
    issues = []
    for where, record in zip(positions, records):
        for name, bare_base64 in media.items():
            value = record.get(name)
            if not isinstance(value, str) or bare_base64 or value.startswith("data:"):
                continue
            if is_url(value):
                why = await asyncio.to_thread(refused_url, value, allow_urls)
            else:
                why = "would be read as a file on the server, which a server does not do for a caller: send the bytes as a data: URI"
            if why:
                issues.append(Issue(where, f"field {name!r} {why}", name))
    if issues:
        raise BodyRefused(422, "some media fields cannot be read", issues)


def _named_field(message: str) -> str | None:
    """The field a source message names ("... field 'text' ..."), if it names one."""
    marker = "field '"
    start = message.find(marker)
    if start < 0:
        return None
    end = message.find("'", start + len(marker))
    return message[start + len(marker):end] if end > 0 else None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value),
                                                                                                     "a number")
