"""Fuzzing the sources (issue 16): generated JSON Lines and CSV files full of damage (bytes that
are not UTF-8, other encodings, lone surrogates, values of the wrong type, broken and non-object
JSON, NUL bytes, bare \\r, CRLF, blank lines, quoted line breaks, short rows, a byte-order mark)
always give a run that exits 0 or 1 with

    len(outputs) + len(errors) == records in,

every good record among the outputs and every damaged one among the errors, both in input order.
Random bytes named .jsonl/.csv/.parquet either run that way or are refused as an input error
(exit 2) naming the file; nothing else (no crash, no exit 4).

Runs go through the Python API on the tiny offline text-classification model (one load, then
~0.2 s a run). Hypothesis is derandomized (the same examples every run) and keeps the default
run short (65 examples, ~30 s); COMPOSER_FUZZ_EXAMPLES=500 runs that many examples per property
instead, and shrinks a failing one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from composer import api
from composer.schema import ConfigError
from conftest import BASE

_EXAMPLES = int(os.environ.get("COMPOSER_FUZZ_EXAMPLES") or 0)


def fuzz_settings(default: int) -> settings:
    """Derandomized (the same examples every run), no deadline (a run takes ~0.2 s, the first
    one loads the model). A failing example is shrunk only with COMPOSER_FUZZ_EXAMPLES set:
    shrinking costs a run per attempt, minutes in all, too long for the default test command."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if _EXAMPLES else [])
    return settings(
        max_examples=_EXAMPLES or default,
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def run_file(tmp_path: Path, name: str, data: bytes, *overrides: str) -> tuple[Path, api.RunResult]:
    folder = tmp_path / uuid.uuid4().hex[:12]
    folder.mkdir()
    path = folder / name
    path.write_bytes(data)
    return path, api.run([*BASE, *overrides, f"input.path={path}"], run_dir=folder / "run")


def assert_invariant(result: api.RunResult) -> None:
    """Exit 0 or 1 as the errors say, and the manifest's counts add up to the files'."""
    outputs, errors = result.outputs(), result.errors()
    assert (result.status, result.exit_code) == (("completed_with_errors", 1) if errors else ("complete", 0)), \
        result.manifest().get("error")
    counts = result.manifest()["counts"]
    assert counts["records_in"] == counts["records_ok"] + counts["records_failed"] == len(outputs) + len(errors)
    assert all(output["prediction"] for output in outputs)


def error_lines(errors: list[dict], noun: str, file: str) -> list[int]:
    """The input line each error names ('line 7 of data.jsonl', 'row 4 of data.csv ...')."""
    found = [re.search(rf"\b{noun} (\d+) of {re.escape(file)}\b", error["message"]) for error in errors]
    assert all(found), [e["message"] for e, f in zip(errors, found) if not f]
    return [int(f.group(1)) for f in found]


# --- JSON Lines ---------------------------------------------------------------------------------------------------

# Text: any Unicode but surrogates (NUL, controls, U+2028, emoji, combining marks), short enough
# for the tiny model's 512 positions whatever the tokenizer makes of it.
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "label"]), inner, max_size=3),
    max_leaves=6,
)
wrong_types = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.lists(json_values, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "label"]), json_values, max_size=3),
)
lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)

# One line of a generated file: (what it is, what it holds). render() turns it into bytes with its
# line number in `n`, and says whether it is a record that must succeed ("ok"), one that must
# fail ("error"), or a line that is no record at all ("blank").
line_specs = st.one_of(
    st.tuples(st.just("good"), st.tuples(texts, st.booleans(), st.none() | json_values)),
    st.tuples(st.just("latin1"), st.tuples(texts, st.sampled_from(["latin-1", "cp1252"]))),
    st.tuples(st.just("wrong_type"), wrong_types),
    st.tuples(st.just("surrogate"), st.tuples(texts, lone_surrogates, st.integers(0, 40))),
    st.tuples(st.just("broken"), st.tuples(texts, st.floats(0, 1, exclude_max=True))),
    st.tuples(st.just("not_object"), st.sampled_from([b"[1, 2]", b"42", b"null", b"true", b"3.5", b'"just a string"', b"[" * 3000])),
    st.tuples(st.just("raw"), st.binary(min_size=1, max_size=60).map(lambda b: b.replace(b"\n", b"\x01"))),
    st.tuples(st.just("carriage"), texts),
    st.tuples(st.just("blank"), st.sampled_from([b"", b" ", b"\t", b"\r", b"  \t "])),
    st.tuples(st.just("nul"), st.integers(1, 30)),
)


def render(spec: tuple, n: int, first: bool) -> tuple[bytes, str]:
    kind, value = spec
    if kind == "good":
        text, ascii_only, extra = value
        row = {"n": n, "text": text, **({"meta": extra} if extra is not None else {})}
        return json.dumps(row, ensure_ascii=ascii_only).encode("utf-8"), "ok"
    if kind == "latin1":
        text, codec = value
        line = json.dumps({"n": n, "text": text}, ensure_ascii=False).encode(codec, errors="replace")
        return line, judged(line, first)
    if kind == "wrong_type":
        return json.dumps({"n": n, "text": value}).encode(), "error"
    if kind == "surrogate":
        text, surrogate, at = value
        at = min(at, len(text))
        return json.dumps({"n": n, "text": text[:at] + surrogate + text[at:]}).encode(), "error"  # \udXXX escape
    if kind == "broken":
        text, cut = value
        line = json.dumps({"n": n, "text": text}).encode()
        return line[: max(1, int(len(line) * cut))], "error"
    if kind in ("not_object", "raw"):
        return value, judged(value, first)
    if kind == "carriage":  # a bare \r inside the string and between tokens: still one record
        line = json.dumps({"n": n, "text": "\r" + value + "\r"}).encode().replace(b"\\r", b"\r").replace(b'{"n"', b'{\r"n"')
        return line, "ok"
    if kind == "blank":
        return value, "blank"
    return b"\x00" * value, "error"


def judged(line: bytes, first: bool) -> str:
    """Bytes the generator cannot vouch for: blank when only ASCII whitespace, else an error
    unless they are UTF-8 JSON of an object with `n` (a Latin-1 line of ASCII is just UTF-8)."""
    if first and line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    if not line.strip():
        return "blank"
    try:
        row = json.loads(line.decode("utf-8"), strict=False)
    except (ValueError, RecursionError):
        return "error"
    return "ok" if isinstance(row, dict) and isinstance(row.get("text"), str) and "n" in row else "error"


def holds_a_record(line: bytes) -> bool:
    """The rule for refusing a file as not JSON Lines: no line is a JSON object or string."""
    try:
        return isinstance(json.loads(line.decode("utf-8"), strict=False), (dict, str))
    except (ValueError, RecursionError):
        return False


jsonl_files = st.fixed_dictionaries({
    "lines": st.lists(line_specs, min_size=1, max_size=30),
    "ending": st.sampled_from([b"\n", b"\r\n"]),
    "final_newline": st.booleans(),
    "bom": st.booleans(),
    "batch_size": st.sampled_from([1, 3, 8]),
    "sort_window": st.sampled_from(["auto", "0"]),
    "prefetch": st.sampled_from([0, 1]),
})


@fuzz_settings(default=25)
@given(spec=jsonl_files)
def test_fuzzed_jsonl_outputs_plus_errors_equal_records_in_input_order(spec, tmp_path):
    lines, expected = [], []
    for number, line_spec in enumerate(spec["lines"], start=1):
        line, outcome = render(line_spec, number, number == 1)
        if number == 1 and spec["bom"]:
            line = b"\xef\xbb\xbf" + line
        last = number == len(spec["lines"])
        line += spec["ending"] if not last or spec["final_newline"] else b""
        # The ending is part of the line: a CRLF line of spaces is blank, a raw line may become one.
        if outcome != "ok" and not line.strip(b" \t\r\n\x0b\x0c" + (b"\xef\xbb\xbf" if number == 1 else b"")):
            outcome = "blank"
        lines.append(line)
        expected.append(outcome)
    data = b"".join(lines)
    overrides = ["input=jsonl", "input.keep=[n]", f"batch_size={spec['batch_size']}",
                 f"sort_window={spec['sort_window']}", f"prefetch={spec['prefetch']}"]
    stripped = [line[3:] if i == 0 and line.startswith(b"\xef\xbb\xbf") else line for i, line in enumerate(data.split(b"\n"))]
    if not any(holds_a_record(line) for line in stripped) and any(line.strip() for line in stripped):
        with pytest.raises(ConfigError, match="is not JSON Lines"):
            run_file(tmp_path, "data.jsonl", data, *overrides)
        return
    _, result = run_file(tmp_path, "data.jsonl", data, *overrides)
    assert_invariant(result)
    ok = [n for n, outcome in enumerate(expected, start=1) if outcome == "ok"]
    failed = [n for n, outcome in enumerate(expected, start=1) if outcome == "error"]
    assert [output["n"] for output in result.outputs()] == ok
    assert error_lines(result.errors(), "line", "data.jsonl") == failed
    assert result.manifest()["counts"]["records_in"] == len(ok) + len(failed)


# --- CSV ----------------------------------------------------------------------------------------------------------

row_specs = st.one_of(
    st.tuples(st.just("good"), texts),  # may hold the delimiter, quotes and line breaks: the writer quotes them
    st.tuples(st.just("latin1"), texts.map(lambda t: t + "é")),
    st.tuples(st.just("short"), st.none()),
    st.tuples(st.just("extra"), st.tuples(texts, st.lists(texts, min_size=1, max_size=3))),
    st.tuples(st.just("blank"), st.none()),
)
csv_files = st.fixed_dictionaries({
    "rows": st.lists(row_specs, min_size=1, max_size=25),
    "delimiter": st.sampled_from([",", ";", "|"]),
    "quoting": st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    "ending": st.sampled_from(["\n", "\r\n"]),
    "bom": st.booleans(),
    "batch_size": st.sampled_from([1, 4]),
})
LINE_BREAK = re.compile("\r\n|\r|\n")


@fuzz_settings(default=20)
@given(spec=csv_files)
def test_fuzzed_csv_outputs_plus_errors_equal_rows_in_input_order(spec, tmp_path):
    def line(fields: list[str]) -> str:
        buffer = io.StringIO(newline="")
        csv.writer(buffer, delimiter=spec["delimiter"], quoting=spec["quoting"], lineterminator=spec["ending"]).writerow(fields)
        return buffer.getvalue()

    chunks = [("\ufeff" if spec["bom"] else "").encode() + line(["n", "text"]).encode()]
    next_line, ok, failed, multiline = 2, [], [], 0
    for index, (kind, value) in enumerate(spec["rows"]):
        n = str(index)
        if kind == "blank":
            text_line, encoding = spec["ending"], "utf-8"
        elif kind == "short":
            text_line, encoding = line([n]), "utf-8"
        elif kind == "extra":
            text_line, encoding = line([n, value[0], *value[1]]), "utf-8"
        else:
            text_line, encoding = line([n, value]), "latin-1" if kind == "latin1" else "utf-8"
        data = text_line.encode(encoding, errors="replace")
        spans = len(LINE_BREAK.findall(text_line))
        if kind != "blank":
            start = next_line
            if spans > 1:
                multiline += 1
            decodes = _decodes(data)
            (ok if kind in ("good", "extra") and decodes else failed).append(n if kind in ("good", "extra") and decodes else start)
        next_line += spans
        chunks.append(data)
    overrides = ["input=csv", "input.keep=[n]", f"input.delimiter='{spec['delimiter']}'", f"batch_size={spec['batch_size']}"]
    _, result = run_file(tmp_path, "data.csv", b"".join(chunks), *overrides)
    assert_invariant(result)
    assert [output["n"] for output in result.outputs()] == ok
    assert error_lines(result.errors(), "row", "data.csv") == failed
    reported = result.manifest()["stages"]["source"].get("multiline_rows", {"count": 0})["count"]
    assert reported == multiline


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# --- random bytes under a file kind's name ---------------------------------------------------------------------------

random_files = st.one_of(
    st.binary(max_size=3000),
    # Random bytes around a few good lines: records between the damage.
    st.lists(st.binary(max_size=200) | st.just(b'{"text": "a good line"}\n'), max_size=12).map(b"".join),
)


@fuzz_settings(default=20)
@given(data=random_files, kind=st.sampled_from(["jsonl", "csv", "parquet"]))
def test_random_bytes_run_or_are_refused_naming_the_file_never_crash(data, kind, tmp_path):
    try:
        path, result = run_file(tmp_path, f"data.{kind}", data, f"input={kind}")
    except ConfigError as error:
        [issue] = error.issues
        assert issue.path == "input.path" and issue.message.startswith(str(tmp_path)) and f"data.{kind} " in issue.message
        assert "is not" in issue.message
        return
    assert kind != "parquet"  # random bytes are never a Parquet file
    assert_invariant(result)
    if kind == "jsonl":
        lines = data.split(b"\n")
        lines[0] = lines[0][3:] if lines[0].startswith(b"\xef\xbb\xbf") else lines[0]
        assert result.manifest()["counts"]["records_in"] == sum(1 for line in lines if line.strip())
