"""Writes the nasty-input corpus beside this file (tests/test_messy_inputs.py reads it).

Each file is one kind of damage seen in real data (issue 16); the files are checked in, so this
script only documents how they were made: `python tests/data/nasty/make_corpus.py` rewrites
them byte for byte (fixed seeds).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def good(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"n": i, "text": f"review number {i} was fine"}).encode() for i in range(start, start + n)]


def lines(*parts: bytes, end: bytes = b"\n") -> bytes:
    return b"".join(part + end for part in parts)


def main() -> None:
    files: dict[str, bytes] = {}
    # One line saved as Latin-1 (0xe9 is 'é') among UTF-8 lines.
    files["latin1_line.jsonl"] = lines(*good(5), b'{"n": 5, "text": "caf\xe9 au lait"}', *good(4, 6))
    # A JSON escape for half a UTF-16 pair: json.loads accepts it, UTF-8 cannot hold it.
    files["lone_surrogate.jsonl"] = lines(*good(3), b'{"n": 3, "text": "broken \\ud800 pair"}', *good(2, 4))
    # The model input of the wrong type, in a mix: list, mapping, number, boolean, null.
    files["wrong_types.jsonl"] = lines(
        *good(2),
        b'{"n": 2, "text": ["a", "b"]}',
        b'{"n": 3, "text": {"a": 1}}',
        b'{"n": 4, "text": 42}',
        *good(1, 5),
        b'{"n": 6, "text": true}',
        b'{"n": 7, "text": null}',
        *good(1, 8),
    )
    # Lines that are JSON but not an object (or string), a line too deep and a number too long.
    files["not_objects.jsonl"] = lines(
        *good(1), b"[1, 2]", b"42", b"null", b'"a lone string is a record"', b"[" * 5000 + b"]" * 5000, b'{"n": 6, "text": ' + b"7" * 5000 + b"}",
        *good(1, 7),
    )
    # A bare \r inside a string and between tokens; CRLF line ends; the last line without one.
    files["carriage_returns.jsonl"] = (
        b'{"n": 0, "text": "first\rsecond"}\r\n{"n": 1,\r"text": "spaced"}\r\n' + lines(*good(2, 2), end=b"\r\n") + good(1, 4)[0]
    )
    # A torn write: NUL bytes where a line was, among good lines.
    files["nul_line.jsonl"] = lines(*good(2), b"\x00" * 40, *good(2, 3))
    # Random bytes named .jsonl, a gzip file named .jsonl, UTF-16 JSON Lines, CSV named .jsonl.
    files["random_bytes.jsonl"] = random.Random(16).randbytes(3000)
    files["gzipped.jsonl"] = gzip.compress(lines(*good(3)), mtime=0)
    files["utf16.jsonl"] = "".join(json.dumps({"text": t}) + "\n" for t in ("one", "two")).encode("utf-16")
    files["csv_named.jsonl"] = b"n,text\n0,hello\n1,world\n"
    # Text and JSON Lines named .parquet; a Parquet file cut short.
    files["text.parquet"] = b"hello world\nthis is text, not parquet\n"
    files["jsonl_named.parquet"] = lines(*good(2))
    files["truncated.parquet"] = b"PAR1" + random.Random(7).randbytes(200)
    # A CSV with one stray quote: row 4's text opens a quoted field that swallows lines 4-13.
    rows = [b"n,text"] + [b"%d,row %d is fine" % (i, i) for i in range(3)]
    rows += [b'3,"this quote is never closed'] + [b"%d,row %d is swallowed" % (i, i) for i in range(4, 13)]
    rows += [b'13,a "quoted" word ends it"', b"14,row 14 is fine"]
    files["stray_quote.csv"] = lines(*rows)
    # A CSV with one Latin-1 row, a short row and a blank line.
    files["latin1_row.csv"] = lines(b"n,text", b"0,fine", b"1,caf\xe9", b"", b"2", b"3,also fine")
    for name, data in files.items():
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
