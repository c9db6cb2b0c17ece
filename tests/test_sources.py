"""Sources: every input kind yields the same records, ids and outputs for the same data; ids,
labels, limits and kept columns; bad rows become errors.jsonl lines; the input fingerprint.

Runs go through the Python API (`api.run`) with the tiny offline text-classification model; one
CLI run checks the user-facing exit code. Every prediction is compared with the plain
`pipeline()` call on that record's text alone.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from composer import api
from composer.records import RecordFailure, to_jsonable
from composer.stages.sources import CsvSource, DatasetSource, InlineSource, JsonlSource, ParquetSource
from conftest import BASE, ROWS, TEXTS, assert_close, read_jsonl, run_cli, write_jsonl



def hand_id(row: dict) -> str:
    """The content-hash id, computed here without composer: sha256 of canonical JSON, 16 hex."""
    canonical = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def inline_override(rows: list) -> str:
    def item(row):
        if isinstance(row, str):
            return f"'{row}'"
        return "{" + ",".join(f"{key}:'{value}'" for key, value in row.items()) + "}"

    return "input.records=[" + ",".join(item(row) for row in rows) + "]"


def run(tmp_path: Path, name: str, *overrides: str):
    return api.run([*BASE, *overrides], run_dir=tmp_path / name)


@pytest.fixture(scope="module")
def expected() -> dict[str, object]:
    """text -> what the plain pipeline returns for that text alone (the reference)."""
    from transformers import pipeline

    from composer.testing import tiny_model_path

    reference = pipeline("text-classification", model=str(tiny_model_path("text-classification")))
    texts = TEXTS + ["Weather is nice today", "Final record"]
    return {text: to_jsonable(reference(text)) for text in texts}


def assert_outputs(outputs: list[dict], texts: list[str], expected: dict, field: str = "text") -> None:
    assert [o[field] for o in outputs] == texts
    for output in outputs:
        assert_close(output["prediction"], expected[output[field]], where=f"record {output['id']}")


# --- every source kind, same data -> same records, ids and outputs -------------------------------------------------


def _source_overrides(kind: str, tmp_path: Path) -> list[str]:
    if kind == "inline":
        return ["input=inline", inline_override(ROWS)]
    if kind == "jsonl":
        return ["input=jsonl", f"input.path={write_jsonl(tmp_path / 'data.jsonl', ROWS)}"]
    if kind == "csv":
        return ["input=csv", f"input.path={write_csv(tmp_path / 'data.csv', ROWS)}"]
    if kind == "csv-semicolon":
        path = write_csv(tmp_path / "data.csv", ROWS, delimiter=";")
        assert path.read_text().splitlines()[0] == "uid;text;title;label"
        return ["input=csv", f"input.path={path}", "input.delimiter=';'"]
    if kind == "parquet":
        return ["input=parquet", f"input.path={write_parquet(tmp_path / 'data.parquet', ROWS)}"]
    streaming = "input.streaming=" + ("true" if kind.endswith("-streaming") else "false")
    if kind.startswith("dataset-json"):
        path = write_jsonl(tmp_path / "data.jsonl", ROWS)
        return ["input=dataset", "input.path=json", f"input.data_files={path}", streaming]
    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "data.jsonl", ROWS)
    return ["input=dataset", f"input.path={folder}", streaming]


SOURCE_KINDS = [
    "inline", "jsonl", "csv", "csv-semicolon", "parquet",
    "dataset-json-streaming", "dataset-json", "dataset-folder-streaming", "dataset-folder",
]


@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_every_source_yields_the_same_records_ids_and_outputs(kind, tmp_path, expected):
    result = run(tmp_path, "run", *_source_overrides(kind, tmp_path), "batch_size=2")
    assert (result.status, result.exit_code) == ("complete", 0)
    outputs = result.outputs()
    # Content-hash ids of the whole row, in input order; the same for every source.
    assert [o["id"] for o in outputs] == [hand_id(row) for row in ROWS]
    assert all(set(o) == {"id", "text", "prediction"} for o in outputs)
    assert_outputs(outputs, TEXTS, expected)
    assert result.errors() == []
    manifest = result.manifest()
    assert manifest["counts"] == {"records_in": 5, "records_ok": 5, "records_failed": 0, "batches": 3}
    kind_in_manifest = {"inline": "inline", "dataset": "dataset"}.get(kind.split("-")[0], "file")
    assert manifest["input"]["kind"] == kind_in_manifest


def test_inline_strings_match_a_jsonl_of_text_only_rows(tmp_path, expected):
    jsonl = write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in TEXTS])
    inline = run(tmp_path, "inline", "input=inline", inline_override(TEXTS))
    from_file = run(tmp_path, "jsonl", "input=jsonl", f"input.path={jsonl}")
    assert inline.outputs() == from_file.outputs()
    assert [o["id"] for o in inline.outputs()] == [hand_id({"text": t}) for t in TEXTS]
    assert_outputs(inline.outputs(), TEXTS, expected)


# --- input.field, id_field, content ids, label_field, limit, keep --------------------------------------------------


def test_input_field_names_the_column_the_model_reads(tmp_path, expected):
    rows = [{"body": row["text"], "text": "decoy"} for row in ROWS]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    config, graph = api.plan([*BASE, "input=jsonl", f"input.path={data}", "input.field=body"])
    assert graph.model_stages()[0].reads == ("body",)
    result = run(tmp_path, "run", "input=jsonl", f"input.path={data}", "input.field=body")
    outputs = result.outputs()
    assert all(set(o) == {"id", "body", "prediction"} for o in outputs)  # the unread text column is not carried
    assert_outputs(outputs, TEXTS, expected, field="body")
    assert [o["id"] for o in outputs] == [hand_id(row) for row in rows]


def test_id_field_gives_ids_and_a_duplicate_id_is_a_record_error(tmp_path, expected):
    rows = [*ROWS[:3], {**ROWS[3], "uid": "r2"}, ROWS[4]]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    result = run(tmp_path, "run", "input=jsonl", f"input.path={data}", "input.id_field=uid")
    assert (result.status, result.exit_code) == ("completed_with_errors", 1)
    outputs = result.outputs()
    assert [o["id"] for o in outputs] == ["r1", "r2", "r3", "r5"]
    assert_outputs(outputs, [TEXTS[0], TEXTS[1], TEXTS[2], TEXTS[4]], expected)
    [error] = result.errors()
    assert error["id"] == "r2" and error["stage"] == "source" and error["error_type"] == "ValueError"
    assert "duplicate id 'r2'" in error["message"] and "line 4 of data.jsonl" in error["message"]


def test_numeric_ids_from_every_file_kind_are_the_same_strings(tmp_path):
    rows = [{"n": i * 10, "text": t} for i, t in enumerate(TEXTS)]
    jsonl = JsonlSource("s", path=str(write_jsonl(tmp_path / "a.jsonl", rows)), id_field="n")
    csv_source = CsvSource("s", path=str(write_csv(tmp_path / "a.csv", rows)), id_field="n")
    parquet = ParquetSource("s", path=str(write_parquet(tmp_path / "a.parquet", rows)), id_field="n")
    want = [{"id": str(i * 10), "text": t} for i, t in enumerate(TEXTS)]
    for source in (jsonl, csv_source, parquet):
        assert list(source.iter_records()) == want, type(source).__name__


def test_content_ids_are_stable_across_runs_and_duplicates_get_suffixes(tmp_path, expected):
    a, b = {"text": TEXTS[0], "title": "x"}, {"text": TEXTS[1], "title": "x"}
    data = write_jsonl(tmp_path / "data.jsonl", [a, b, a, a, b])
    first = run(tmp_path, "first", "input=jsonl", f"input.path={data}", "batch_size=2")
    second = run(tmp_path, "second", "input=jsonl", f"input.path={data}", "batch_size=3")
    ids = [o["id"] for o in first.outputs()]
    assert ids == [hand_id(a), hand_id(b), hand_id(a) + "-2", hand_id(a) + "-3", hand_id(b) + "-2"]
    assert [o["id"] for o in second.outputs()] == ids
    assert first.outputs() == second.outputs()  # batching never changes outputs
    assert first.errors() == [] and first.status == "complete"
    assert_outputs(first.outputs(), [TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[0], TEXTS[1]], expected)


def test_label_field_gives_accuracy_equal_to_a_hand_computation(tmp_path):
    rows = [{"text": row["text"], "gold": row["label"]} for row in ROWS]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    result = run(tmp_path, "run", "input=jsonl", f"input.path={data}", "input.label_field=gold")
    outputs = result.outputs()
    assert [o["label"] for o in outputs] == [row["label"] for row in ROWS]
    predicted = [max(o["prediction"], key=lambda p: p["score"])["label"] for o in outputs]
    hand_accuracy = sum(p == row["label"] for p, row in zip(predicted, ROWS)) / len(ROWS)
    quality = result.metrics()["quality"]["model"]
    assert quality["n"] == 5
    assert quality["accuracy"] == pytest.approx(hand_accuracy)
    gold = {row["label"] for row in ROWS}
    assert sum(quality["per_class"][label]["support"] for label in gold) == 5


def test_without_label_field_there_are_no_quality_metrics(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    result = run(tmp_path, "run", "input=jsonl", f"input.path={data}")
    assert result.metrics()["quality"] == {}
    assert "label" not in result.outputs()[0]


def test_limit_stops_after_that_many_rows(tmp_path, expected):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    result = run(tmp_path, "run", "input=jsonl", f"input.path={data}", "input.limit=3", "input.id_field=uid")
    assert [o["id"] for o in result.outputs()] == ["r1", "r2", "r3"]
    assert_outputs(result.outputs(), TEXTS[:3], expected)
    assert result.manifest()["counts"]["records_in"] == 3
    assert JsonlSource("s", path=str(data), limit=3).total() == 3


def test_keep_carries_extra_columns_into_outputs(tmp_path, expected):
    data = write_csv(tmp_path / "data.csv", ROWS)
    result = run(tmp_path, "run", "input=csv", f"input.path={data}", "input.id_field=uid", "input.keep=[title,uid]")
    outputs = result.outputs()
    assert [(o["id"], o["title"], o["uid"]) for o in outputs] == [(r["uid"], r["title"], r["uid"]) for r in ROWS]
    assert all(set(o) == {"id", "text", "title", "uid", "prediction"} for o in outputs)
    assert_outputs(outputs, TEXTS, expected)


# --- bad input never ends the run ----------------------------------------------------------------------------------


def _bad_jsonl(path: Path) -> Path:
    lines = [
        json.dumps({"uid": "a", "text": TEXTS[0]}),
        '{"uid": "b", "text": "unterminated',
        json.dumps({"uid": "c", "title": "no text here"}),
        "",
        json.dumps({"uid": "d", "text": TEXTS[3]}),
        json.dumps({"uid": "e", "text": None}),
        json.dumps([1, 2]),
        json.dumps({"uid": "f", "text": TEXTS[4]}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _check_bad_input_errors(errors: list[dict]) -> None:
    assert [(e["id"], e["stage"], e["error_type"]) for e in errors] == [
        ("line-2", "source", "JSONDecodeError"),
        ("c", "source", "KeyError"),
        ("e", "source", "ValueError"),
        ("line-7", "source", "TypeError"),
    ]
    messages = [e["message"] for e in errors]
    assert messages[0].startswith("line 2 of bad.jsonl: ") and "(char " in messages[0]  # json's own message
    assert "line 3 of bad.jsonl has no field 'text' (fields: title, uid)" in messages[1]
    assert "line 6 of bad.jsonl has no value (null) in field 'text'" in messages[2]
    assert "line 7 of bad.jsonl: expected a JSON object or string, got list" in messages[3]


def test_bad_rows_become_errors_and_the_other_records_are_intact(tmp_path, expected):
    data = _bad_jsonl(tmp_path / "bad.jsonl")
    result = run(tmp_path, "run", "input=jsonl", f"input.path={data}", "input.id_field=uid", "batch_size=3")
    assert (result.status, result.exit_code) == ("completed_with_errors", 1)
    assert [o["id"] for o in result.outputs()] == ["a", "d", "f"]
    assert_outputs(result.outputs(), [TEXTS[0], TEXTS[3], TEXTS[4]], expected)
    _check_bad_input_errors(result.errors())
    # batches: those the model ran; the three good rows, read in one window, make one batch of 3.
    assert result.manifest()["counts"] == {"records_in": 7, "records_ok": 3, "records_failed": 4, "batches": 1}


def test_cli_bad_input_exits_1_with_completed_with_errors(tmp_path):
    data = _bad_jsonl(tmp_path / "bad.jsonl")
    run_dir = tmp_path / "cli-run"
    done = run_cli("run", *BASE, "input=jsonl", f"input.path={data}", "input.id_field=uid", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"run completed_with_errors: {run_dir}" in done.stdout
    assert "records: 3 ok, 4 failed (errors.jsonl)" in done.stdout
    assert [o["id"] for o in read_jsonl(run_dir / "outputs.jsonl")] == ["a", "d", "f"]
    _check_bad_input_errors(read_jsonl(run_dir / "errors.jsonl"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (manifest["status"], manifest["exit_code"]) == ("completed_with_errors", 1)


def test_csv_short_row_is_an_error_naming_its_file_line(tmp_path, expected):
    path = tmp_path / "short.csv"
    path.write_text(f"uid,text\na,{TEXTS[0]}\n\nb\n\"c\",\"{TEXTS[1]}\"\n", encoding="utf-8")
    result = run(tmp_path, "run", "input=csv", f"input.path={path}", "input.id_field=uid")
    assert [o["id"] for o in result.outputs()] == ["a", "c"]
    assert_outputs(result.outputs(), [TEXTS[0], TEXTS[1]], expected)
    [error] = result.errors()
    assert (error["id"], error["stage"]) == ("b", "source")
    assert "row 4 of short.csv has no value (null) in field 'text'" in error["message"]


def test_dataset_row_missing_the_field_is_an_error_not_a_model_failure(tmp_path, expected):
    data = write_jsonl(tmp_path / "data.jsonl", [{"uid": "a", "text": TEXTS[0]}, {"uid": "b"}, {"uid": "c", "text": TEXTS[2]}])
    result = run(tmp_path, "run", "input=dataset", "input.path=json", f"input.data_files={data}", "input.id_field=uid")
    assert [o["id"] for o in result.outputs()] == ["a", "c"]
    assert_outputs(result.outputs(), [TEXTS[0], TEXTS[2]], expected)
    [error] = result.errors()
    assert (error["id"], error["stage"]) == ("b", "source")
    assert "row 1 of json[train] has no value (null) in field 'text'" in error["message"]


# --- the input fingerprint in manifest.json ------------------------------------------------------------------------


def test_manifest_input_fingerprint_is_the_file_sha256_and_follows_changes(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    first = run(tmp_path, "first", "input=jsonl", f"input.path={data}", "input.limit=1")
    fingerprint = first.manifest()["input"]
    assert fingerprint["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert fingerprint["bytes"] == len(data.read_bytes())
    assert fingerprint["path"] == str(data.resolve())

    write_jsonl(data, ROWS[:4])
    second = run(tmp_path, "second", "input=jsonl", f"input.path={data}", "input.limit=1")
    assert second.manifest()["input"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert second.manifest()["input"]["sha256"] != fingerprint["sha256"]


def test_dataset_and_inline_fingerprints_follow_the_data(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    source = DatasetSource("s", path="json", data_files=str(data))
    before = source.data_fingerprint()
    assert before["kind"] == "dataset" and len(before["sha256"]) == 64
    write_jsonl(data, ROWS[:2])
    assert source.data_fingerprint()["sha256"] != before["sha256"]

    one = InlineSource("s", records=["a", "b"]).data_fingerprint()
    assert one == InlineSource("s", records=["a", "b"], limit=1).data_fingerprint()
    assert one != InlineSource("s", records=["a", "c"]).data_fingerprint()


# --- source classes used directly ----------------------------------------------------------------------------------


def test_jsonl_total_counts_a_last_line_without_newline(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS[:3]), encoding="utf-8")  # no final newline
    source = JsonlSource("s", path=str(path))
    assert source.total() == 3 == len(list(source.iter_records()))
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:3]), encoding="utf-8")
    assert JsonlSource("s", path=str(path)).total() == 3


def test_jsonl_with_a_byte_order_mark_reads_its_first_line(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:2]).encode())
    assert [r["text"] for r in JsonlSource("s", path=str(path)).iter_records()] == TEXTS[:2]


def test_limit_counts_bad_rows_too(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(f'{json.dumps({"text": "x"})}\nnot json\n{json.dumps({"text": "y"})}\n', encoding="utf-8")
    items = list(JsonlSource("s", path=str(path), limit=2).iter_records())
    assert isinstance(items[1], RecordFailure) and len(items) == 2
    assert items[0] == {"id": hand_id({"text": "x"}), "text": "x"}


def test_csv_semicolon_and_quoted_multiline_fields(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('\ufeffid;text;note\n1;"two\nlines; here";n1\n2;plain;n2\n', encoding="utf-8")
    source = CsvSource("s", path=str(path), delimiter=";", id_field="id", keep=["note"])
    assert list(source.iter_records()) == [
        {"id": "1", "text": "two\nlines; here", "note": "n1"},
        {"id": "2", "text": "plain", "note": "n2"},
    ]
    assert source.writes == ("id", "text", "note")


def test_csv_delimiter_is_one_character_or_tab(tmp_path):
    """Found in review: `input.delimiter=ab` ended the run with csv's own error (exit 4), and a
    tab cannot be written in a Hydra override; `tab` names it, anything else is a config error."""
    from composer.schema import ConfigError

    path = tmp_path / "a.tsv"
    path.write_text("id\ttext\n1\tsome words\n", encoding="utf-8")
    source = CsvSource("s", path=str(path), delimiter="tab", id_field="id")
    assert list(source.iter_records()) == [{"id": "1", "text": "some words"}]
    with pytest.raises(ConfigError) as caught:
        api.plan([*BASE, "input=csv", f"input.path={path}", "input.delimiter=ab"])
    assert [str(issue) for issue in caught.value.issues] == ["input.delimiter: a csv delimiter is one character, or tab; got 'ab'"]


def test_inline_strings_and_mappings(tmp_path):
    source = InlineSource("s", records=["hello", {"text": "hi", "k": 1}], keep=[], label_field="k")
    first, second = source.iter_records()
    assert first == {"id": hand_id({"text": "hello"}), "text": "hello", "label": None}
    assert second == {"id": hand_id({"text": "hi", "k": 1}), "text": "hi", "label": 1}
    assert source.total() == 2 and InlineSource("s", records=["a", "b", "c"], limit=2).total() == 2
    missing = list(InlineSource("s", records=[{"body": "x"}]).iter_records())[0]
    assert isinstance(missing, RecordFailure) and "input.records[0] has no field 'text'" in missing.message


def test_parquet_source_reads_rows_in_order(tmp_path):
    path = write_parquet(tmp_path / "a.parquet", ROWS)
    source = ParquetSource("s", path=str(path), id_field="uid", label_field="label", keep=["title"])
    assert source.total() == 5
    assert list(source.iter_records()) == [
        {"id": r["uid"], "text": r["text"], "label": r["label"], "title": r["title"]} for r in ROWS
    ]
    assert source.data_fingerprint()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
