"""Messy real data (issue 16): one bad line, byte or type fails that record, never the run, and
nothing is lost silently; a file that is not what its `input` kind says is a clear input error
(exit 2) before any model loads.

The nasty inputs are checked in (tests/data/nasty/, made by its make_corpus.py); each case states
the exact outputs and errors it must give. Runs use the Python API on the tiny offline
text-classification model (one load, reused by every run); two CLI runs check what a user sees.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from composer import api
from composer.schema import ConfigError
from composer.stages.base import Stage
from composer.stages.sources import CsvSource, JsonlSource, ParquetSource
from composer.stages.text import Normalize, Template
from conftest import BASE, read_jsonl, run_cli, write_jsonl

NASTY = Path(__file__).resolve().parent / "data" / "nasty"


def run(tmp_path: Path, name: str, *overrides: str) -> api.RunResult:
    return api.run([*BASE, *overrides], run_dir=tmp_path / name)


def nasty(name: str, tmp_path: Path) -> Path:
    """A copy of a corpus file (runs never touch the checked-in one)."""
    return Path(shutil.copy(NASTY / name, tmp_path / name))


def assert_counts_add_up(result: api.RunResult) -> None:
    """records in = outputs + errors, in the manifest and in the files."""
    counts = result.manifest()["counts"]
    assert counts["records_in"] == counts["records_ok"] + counts["records_failed"]
    assert (counts["records_ok"], counts["records_failed"]) == (len(result.outputs()), len(result.errors()))


# --- the corpus: records that fail alone --------------------------------------------------------------------------


@dataclass
class Case:
    file: str
    overrides: list[str]
    outputs: list  # the `n` of each output, in order
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (id, error_type, message), in order

    @property
    def kind(self) -> str:
        return self.file.rsplit(".", 1)[1]


TAKES_TEXT = "the text-classification model (stage 'model') takes text"
LATIN1 = " (was the file saved as Latin-1 or cp1252? composer reads UTF-8)"
CASES = [
    Case("latin1_line.jsonl", ["input.keep=[n]"], [0, 1, 2, 3, 4, 6, 7, 8, 9], [
        ("line-6", "UnicodeDecodeError",
         "line 6 of latin1_line.jsonl is not valid UTF-8: byte 0xe9 at column 22 (invalid continuation byte)" + LATIN1),
    ]),
    Case("lone_surrogate.jsonl", ["input.keep=[n]"], [0, 1, 2, 4, 5], [
        ("line-4", "UnicodeError",
         "line 4 of lone_surrogate.jsonl: field 'text' holds a lone surrogate '\\ud800', half of a UTF-16 pair, which is not text"),
    ]),
    Case("wrong_types.jsonl", ["input.keep=[n]", "input.id_field=n"], [0, 1, 5, 8], [
        ("2", "TypeError", "line 3 of wrong_types.jsonl: field 'text' is a list of 2, not text "
                           f"(the pipeline would run it as a batch of 2 inputs); {TAKES_TEXT}"),
        ("3", "TypeError", "line 4 of wrong_types.jsonl: field 'text' is a mapping (keys: a), not text "
                           f"(a text-classification input may be a mapping with keys text); {TAKES_TEXT}"),
        ("4", "TypeError", f"line 5 of wrong_types.jsonl: field 'text' is a number (42), not text; {TAKES_TEXT}"),
        ("6", "TypeError", f"line 7 of wrong_types.jsonl: field 'text' is a boolean (True), not text; {TAKES_TEXT}"),
        ("7", "ValueError", "line 8 of wrong_types.jsonl has no value (null) in field 'text'"),
    ]),
    Case("not_objects.jsonl", [], [None, None, None], [
        ("line-2", "TypeError", "line 2 of not_objects.jsonl: expected a JSON object or string, got list"),
        ("line-3", "TypeError", "line 3 of not_objects.jsonl: expected a JSON object or string, got int"),
        ("line-4", "TypeError", "line 4 of not_objects.jsonl: expected a JSON object or string, got NoneType"),
        ("line-6", "RecursionError", "line 6 of not_objects.jsonl: maximum recursion depth exceeded"),
        ("line-7", "ValueError", "line 7 of not_objects.jsonl: Exceeds the limit (4300 digits) for integer string conversion"),
    ]),
    Case("carriage_returns.jsonl", ["input.keep=[n]"], [0, 1, 2, 3, 4]),
    Case("nul_line.jsonl", ["input.keep=[n]"], [0, 1, 3, 4], [
        ("line-3", "JSONDecodeError", "line 3 of nul_line.jsonl: Expecting value: line 1 column 1 (char 0)"),
    ]),
    Case("latin1_row.csv", ["input.keep=[n]"], ["0", "3"], [
        ("row-3", "UnicodeDecodeError", "row 3 of latin1_row.csv is not valid UTF-8: byte 0xe9 in field 'text'" + LATIN1),
        (None, "ValueError", "row 5 of latin1_row.csv has no value (null) in field 'text'"),
    ]),
    Case("stray_quote.csv", ["input.keep=[n]"], ["0", "1", "2", "3", "14"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_nasty_file_gives_exactly_these_outputs_and_errors(case, tmp_path):
    path = nasty(case.file, tmp_path)
    result = run(tmp_path, "run", f"input={case.kind}", f"input.path={path}", "batch_size=4", *case.overrides)
    assert result.exit_code == (1 if case.errors else 0), result.manifest().get("error")
    assert result.status == ("completed_with_errors" if case.errors else "complete")
    outputs = result.outputs()
    assert [o.get("n") for o in outputs] == case.outputs
    assert all(isinstance(o["prediction"], list) and o["prediction"][0]["label"] for o in outputs)
    errors = result.errors()
    assert [(e["error_type"]) for e in errors] == [t for _, t, _ in case.errors]
    for error, (expected_id, _, message) in zip(errors, case.errors):
        assert error["stage"] == "source"
        assert error["message"].startswith(message), error["message"]
        if expected_id is not None:
            assert error["id"] == expected_id
    assert_counts_add_up(result)


def test_a_bare_carriage_return_stays_in_its_line_and_its_string(tmp_path):
    result = run(tmp_path, "run", "input=jsonl", f"input.path={nasty('carriage_returns.jsonl', tmp_path)}", "input.keep=[n]")
    texts = [o["text"] for o in result.outputs()]
    assert texts[:2] == ["first\rsecond", "spaced"]  # one record each, not two broken halves
    assert result.manifest()["counts"]["records_in"] == 5


def test_the_lines_before_a_bad_byte_are_kept_in_a_long_file(tmp_path):
    """The issue's probe: a Latin-1 line after 129 good ones in 2,000 lines lost all of them."""
    rows = [json.dumps({"n": i, "text": f"review {i} of the product"}).encode() for i in range(2000)]
    rows[129] = b'{"n": 129, "text": "caf\xe9"}'
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    result = run(tmp_path, "run", "input=jsonl", f"input.path={path}", "input.keep=[n]", "batch_size=64")
    assert (result.status, result.exit_code) == ("completed_with_errors", 1)
    assert [o["n"] for o in result.outputs()] == [i for i in range(2000) if i != 129]
    [error] = result.errors()
    assert error["id"] == "line-130" and "line 130 of long.jsonl is not valid UTF-8" in error["message"]
    assert result.manifest()["counts"] == {"records_in": 2000, "records_ok": 1999, "records_failed": 1,
                                           "batches": result.manifest()["counts"]["batches"]}


def test_the_error_policy_still_applies_to_bad_lines(tmp_path):
    path = nasty("latin1_line.jsonl", tmp_path)
    failed = run(tmp_path, "fail", "input=jsonl", f"input.path={path}", "input.keep=[n]", "on_error=fail")
    assert (failed.status, failed.exit_code) == ("aborted", 3)
    assert [o["n"] for o in failed.outputs()] == [0, 1, 2, 3, 4]  # the records before the bad line
    assert [e["id"] for e in failed.errors()] == ["line-6"]
    capped = run(tmp_path, "capped", "input=jsonl", f"input.path={nasty('wrong_types.jsonl', tmp_path)}", "max_errors=2", "batch_size=2")
    assert (capped.status, capped.exit_code) == ("aborted", 3)
    assert len(capped.errors()) >= 2


# --- a file that is not what its input kind says: exit 2, before any model loads ----------------------------------


REFUSED = [
    ("random_bytes.jsonl", "is not JSON Lines: it holds binary data (no line is a JSON object)"),
    ("gzipped.jsonl", "is not JSON Lines: it holds gzip-compressed data (decompress it first)"),
    ("utf16.jsonl", "is not JSON Lines: it holds UTF-16 text (save it as UTF-8)"),
    ("csv_named.jsonl", "is not JSON Lines: no line is a JSON object or string "
                        "(line 1 reads 'n,text' (Expecting value: line 1 column 1 (char 0)))"),
    ("text.parquet", "is not a Parquet file: it holds text, starting 'hello world\\nthis is text, not parquet\\n'"),
    ("jsonl_named.parquet", "is not a Parquet file: it holds JSON Lines (use input=jsonl), starting '{\"n\": 0,"),
    ("truncated.parquet", "is not a whole Parquet file: it starts like one but does not end with the footer's b'PAR1' (cut short?)"),
]


@pytest.mark.parametrize("name, problem", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_file_of_the_wrong_kind_is_an_input_error_naming_the_file(name, problem, tmp_path):
    path = nasty(name, tmp_path)
    kind = name.rsplit(".", 1)[1]
    with pytest.raises(ConfigError) as raised:
        api.plan([*BASE, f"input={kind}", f"input.path={path}"])  # `composer plan` finds it too
    [issue] = raised.value.issues
    assert issue.path == "input.path"
    assert issue.message.startswith(f"{path} {problem}"), issue.message
    with pytest.raises(ConfigError):
        run(tmp_path, "run", f"input={kind}", f"input.path={path}")
    assert not (tmp_path / "run" / "manifest.json").exists()  # refused before the run began


def test_a_parquet_file_with_a_damaged_footer_is_an_input_error(tmp_path):
    path = tmp_path / "damaged.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 64 + b"\x10\x00\x00\x00PAR1")  # magic at both ends, nonsense between
    with pytest.raises(ConfigError) as raised:
        run(tmp_path, "run", "input=parquet", f"input.path={path}")
    [issue] = raised.value.issues
    assert issue.path == "input.path" and issue.message.startswith(f"{path} is not a readable Parquet file: ")
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_jsonl_sniffing_refuses_only_files_with_no_record_in_their_first_64_kib(tmp_path):
    one_bad = tmp_path / "one_bad.jsonl"
    one_bad.write_bytes(b"\x89\x00\x01garbage\n" + b'{"text": "fine"}\n')
    assert JsonlSource("s", path=str(one_bad)).sniff() is None  # binary bytes on one line: that line's error
    long_line = tmp_path / "long_line.jsonl"
    long_line.write_text(json.dumps({"text": "word " * 40_000}) + "\n", encoding="utf-8")  # one line of 200 KB
    assert JsonlSource("s", path=str(long_line)).sniff() is None
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n \n")
    assert JsonlSource("s", path=str(empty)).sniff() is None
    late = tmp_path / "late.jsonl"
    late.write_bytes(b"not json\n" * 10_000 + b'{"text": "too late"}\n')
    assert JsonlSource("s", path=str(late)).sniff() == (
        "is not JSON Lines: no line of its first 64 KiB is a JSON object or string "
        "(line 1 reads 'not json' (Expecting value: line 1 column 1 (char 0)))"
    )


def test_cli_exits_2_on_a_binary_jsonl_naming_the_file(tmp_path):
    path = nasty("random_bytes.jsonl", tmp_path)
    run_dir = tmp_path / "cli-run"
    done = run_cli("run", *BASE, "input=jsonl", f"input.path={path}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert f"input.path: {path} is not JSON Lines: it holds binary data" in said
    assert "Traceback" not in said
    assert not (run_dir / "manifest.json").exists() and not (run_dir / "outputs.jsonl").exists()


# --- a CSV whose quoting swallows lines says so ---------------------------------------------------------------------


STRAY_QUOTE_WARNING = (
    "stray_quote.csv: 1 row with a quoted field spanning lines (lines 5-15). Quoted line breaks are valid CSV, "
    "but a stray '\"' makes one too, swallowing the lines after it into one field: check these lines"
)


def test_a_stray_quote_in_a_csv_is_reported_with_its_line_numbers(tmp_path, caplog):
    source = CsvSource("s", path=str(nasty("stray_quote.csv", tmp_path)), keep=["n"])
    with caplog.at_level("WARNING", logger="composer.input"):
        records = list(source.iter_records())
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [("composer.input", "WARNING", STRAY_QUOTE_WARNING)]
    assert [r["n"] for r in records] == ["0", "1", "2", "3", "14"]
    assert records[3]["text"].startswith("this quote is never closed\n4,row 4 is swallowed\n")
    assert source.multiline_rows == [(5, 15)]
    assert source.describe() == {"multiline_rows": {"count": 1, "lines": [[5, 15]]}}


def test_multiline_csv_rows_are_counted_in_the_manifest_and_named_in_errors(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('n,text\n1,"two\nlines"\n2,fine\n3,"three\r\nmore\rlines"\n', encoding="utf-8", newline="")
    result = run(tmp_path, "run", "input=csv", f"input.path={path}", "input.keep=[n,missing]")
    assert result.manifest()["stages"]["source"]["multiline_rows"] == {"count": 2, "lines": [[2, 3], [5, 7]]}
    messages = [e["message"] for e in result.errors()]
    assert messages[0].startswith("row 2 of multi.csv (lines 2-3) has no field 'missing'")
    assert messages[2].startswith("row 5 of multi.csv (lines 5-7) has no field 'missing'")


def test_a_csv_without_multiline_fields_warns_nothing(tmp_path, caplog):
    path = tmp_path / "plain.csv"
    path.write_text("n,text\n1,one\n2,two\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="composer.input"):
        assert len(list(CsvSource("s", path=str(path)).iter_records())) == 2
    assert caplog.records == []


def test_cli_shows_the_stray_quote_warning(tmp_path):
    path = nasty("stray_quote.csv", tmp_path)
    run_dir = tmp_path / "cli-run"
    done = run_cli("run", *BASE, "input=csv", f"input.path={path}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert STRAY_QUOTE_WARNING in done.stderr  # warnings go to stderr
    assert STRAY_QUOTE_WARNING in (run_dir / "run.log").read_text(encoding="utf-8")
    assert len(read_jsonl(run_dir / "outputs.jsonl")) == 5


def test_a_csv_row_over_the_field_size_limit_fails_alone(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text(f'n,text\n1,one\n2,"{"x" * 200_000}"\n3,three\n', encoding="utf-8")
    items = list(CsvSource("s", path=str(path), keep=["n"]).iter_records())
    assert [i["n"] if isinstance(i, dict) else i.error_type for i in items] == ["1", "csv.Error", "3"]
    assert items[1].message == "the row ending on line 3 of huge.csv: field larger than field limit (131072)"


# --- every stage that touches record values: a wrong type fails that record ------------------------------------------


def test_template_and_normalize_readers_check_the_source_value_naming_the_line(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [
        {"text": "fine", "stars": 4}, {"text": ["a", "list"], "stars": 5}, {"text": 3.5, "stars": 1},
    ])
    templated = run(tmp_path, "template", "input=jsonl", f"input.path={data}", "input.keep=[stars]",
                    "preprocess=[{type: template, template: '{text} ({stars} stars)'}]", "model_input=prompt")
    assert [o["prompt"] for o in templated.outputs()] == ["fine (4 stars)", "3.5 (1 stars)"]  # a number is fine in a prompt
    [error] = templated.errors()
    assert error["message"] == ("line 2 of data.jsonl: field 'text' is a list of 2, not text or a number; "
                                "stage 'template' (template) takes text or a number")
    normalized = run(tmp_path, "normalize", "input=jsonl", f"input.path={data}", "preprocess=[{type: normalize}]")
    assert [o["text"] for o in normalized.outputs()] == ["fine"]
    assert [e["message"] for e in normalized.errors()] == [
        "line 2 of data.jsonl: field 'text' is a list of 2, not text; stage 'normalize' (normalize) takes text",
        "line 3 of data.jsonl: field 'text' is a number (3.5), not text; stage 'normalize' (normalize) takes text",
    ]


def test_template_fails_a_record_whose_value_is_not_text_or_a_number():
    stage = Template("t", template="Q: {text} {extra}")
    with pytest.raises(TypeError, match=r"record 'b': field 'extra' is list, not text or a number; stage 't'"):
        stage.process([{"id": "b", "text": "x", "extra": ["a"]}])
    with pytest.raises(TypeError, match=r"field 'extra' is null"):
        stage.process([{"id": "c", "text": "x", "extra": None}])
    assert stage.process([{"id": "d", "text": "x", "extra": 2}])[0]["prompt"] == "Q: x 2"
    with pytest.raises(TypeError, match="field 'text' is dict, not text"):
        Normalize("n").process([{"id": "e", "text": {"a": 1}}])


def test_a_structured_input_the_pipeline_takes_is_not_refused(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"text": {"text": "the battery", "text_pair": "lasts for days"}}])
    result = run(tmp_path, "pairs", "input=jsonl", f"input.path={pairs}")
    assert result.errors() == [] and len(result.outputs()) == 1


def test_no_check_where_a_stage_rewrites_the_field_before_the_model(tmp_path):
    """A custom stage that turns a list into text runs before the model: the source leaves the
    list alone (it checks only values that reach a reader as the source wrote them)."""
    data = write_jsonl(tmp_path / "data.jsonl", [{"text": ["two", "parts"]}])
    result = run(tmp_path, "run", "input=jsonl", f"input.path={data}", "allow_any_target=true",
                 "preprocess=[{_target_: test_messy_inputs.JoinWords}]")
    assert result.errors() == [] and [o["text"] for o in result.outputs()] == ["two parts"]


class JoinWords(Stage):
    """Test stage: text given as a list of words becomes one string."""

    def __init__(self, name: str):
        super().__init__(name)
        self.reads, self.writes = ("text",), ("text",)

    def process(self, records):
        for record in records:
            record["text"] = " ".join(record["text"])
        return records


class SurrogatePrompt(Stage):
    """Test stage: writes `prompt`, with a lone surrogate for records whose text says 'bad' (as a
    custom stage decoding bytes carelessly would): the source never sees it."""

    def __init__(self, name: str):
        super().__init__(name)
        self.reads, self.writes = ("text",), ("prompt",)

    def process(self, records):
        for record in records:
            record["prompt"] = record["text"] + (" \ud800" if "bad" in record["text"] else "")
        return records


def test_token_counting_survives_a_text_the_tokenizer_refuses(tmp_path):
    """input_lengths measures a window in one tokenizer call; a lone surrogate made it raise
    TypeError (TextEncodeInput must be ...) out of batch planning, ending the run."""
    rows = [{"text": f"{'bad' if i in (3, 11) else 'good'} review number {i}"} for i in range(16)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    result = run(tmp_path, "run", "input=jsonl", f"input.path={data}", "allow_any_target=true", "batch_size=4",
                 "preprocess=[{_target_: test_messy_inputs.SurrogatePrompt}]", "model_input=prompt")
    assert (result.status, result.exit_code) == ("completed_with_errors", 1), result.manifest().get("error")
    assert [o["text"] for o in result.outputs()] == [r["text"] for i, r in enumerate(rows) if i not in (3, 11)]
    assert [e["stage"] for e in result.errors()] == ["model", "model"]
    assert_counts_add_up(result)


def test_input_lengths_measures_the_other_texts_when_one_cannot_be_tokenized(tmp_path):
    config, graph = api.plan([*BASE, "input=inline", "input.records=[x]"])
    stage = graph.model_stages()[0]
    stage.setup()
    try:
        records = [{"id": "a", "text": "hello there"}, {"id": "b", "text": "broken \ud800"}, {"id": "c", "text": "hi"}]
        lengths = stage.input_lengths(records)
        assert lengths["a"] == stage.input_lengths([records[0]])["a"] > lengths["c"] > 0
        assert lengths["b"] >= 1  # a character estimate: it only orders the batches
    finally:
        stage.close()


def test_reading_messy_sources_directly_never_raises(tmp_path):
    """Every corpus file the sources accept yields one item per non-blank line or row."""
    for name, source_class, expected in [
        ("latin1_line.jsonl", JsonlSource, 10), ("lone_surrogate.jsonl", JsonlSource, 6),
        ("not_objects.jsonl", JsonlSource, 8), ("nul_line.jsonl", JsonlSource, 5),
        ("carriage_returns.jsonl", JsonlSource, 5), ("latin1_row.csv", CsvSource, 4),
    ]:
        items = list(source_class("s", path=str(NASTY / name)).iter_records())
        assert len(items) == expected, name
        assert all(re.fullmatch(r"[\x20-\x7e]+", getattr(i, "id", None) or i["id"]) for i in items), name


def test_parquet_sniff_accepts_a_real_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "ok.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "a"}]), path)
    source = ParquetSource("s", path=str(path))
    assert source.sniff() is None
    source.setup()
    assert [r["text"] for r in source.iter_records()] == ["a"]


def test_a_row_nested_too_deep_or_a_string_line_with_a_surrogate_fails_alone(tmp_path):
    path = tmp_path / "odd.jsonl"
    deep = {"text": "deep", "meta": json.loads("[" * 150 + "]" * 150)}
    path.write_text("\n".join([json.dumps({"text": "fine"}), json.dumps(deep), '"a string \\udfff line"', '"ok line"']) + "\n")
    items = list(JsonlSource("s", path=str(path)).iter_records())
    assert [i["text"] for i in items if isinstance(i, dict)] == ["fine", "ok line"]
    assert [(i.id, i.error_type, i.message) for i in items if not isinstance(i, dict)] == [
        ("line-2", "ValueError", "line 2 of odd.jsonl is nested more than 100 levels deep"),
        ("line-3", "UnicodeError", "line 3 of odd.jsonl: field 'text' holds a lone surrogate '\\udfff', half of a UTF-16 pair, which is not text"),
    ]


def test_a_file_name_that_is_not_utf8_does_not_break_the_error_lines(tmp_path):
    path = tmp_path / b"caf\xe9.jsonl".decode("utf-8", "surrogateescape")  # as os.listdir gives such a name
    path.write_bytes(b'{"text": "fine"}\nnot json\n')
    _, failure = JsonlSource("s", path=str(path)).iter_records()
    assert failure.message.startswith("line 2 of caf\ufffd.jsonl: Expecting value")
    failure.message.encode("utf-8")  # errors.jsonl can hold it
