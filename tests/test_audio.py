"""Audio: the speech/audio experiments run offline on tiny models, decoding and resampling happen
in composer's load_audio stage (soundfile + soxr), and outputs equal plain pipeline() results."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from composer import api
from composer.records import to_jsonable
from composer.schema import ConfigError
from tests.conftest import assert_close, run_cli

COMMON = ["threads=1", "progress=false", "batch_size=2"]
CTC = "model.id=tiny:automatic-speech-recognition"
WHISPER = "model.id=tiny:automatic-speech-recognition-whisper"
RATE = 16_000  # every tiny audio model's feature-extractor rate


def _noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Seeded speech-like noise: a few tones under white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tones = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 440.0, 990.0)) * 0.1
    mono = (tones + rng.standard_normal(t.size) * 0.05).astype(np.float32)
    if channels == 1:
        return mono
    return np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1)  # distinct channels


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Audio files of every readable format, rate and channel count, plus the bad ones."""
    root = tmp_path_factory.mktemp("audio")
    (root / "good").mkdir()
    sf.write(root / "good" / "a_stereo_44k.wav", _noise(1.5, 44_100, channels=2), 44_100)
    sf.write(root / "good" / "b_tone.flac", _noise(1.0, RATE, seed=1), RATE)
    (root / "good" / "nested").mkdir()
    sf.write(root / "good" / "nested" / "c_clip.ogg", _noise(1.0, 22_050, seed=2), 22_050, format="OGG", subtype="VORBIS")
    sf.write(root / "good" / "nested" / "d_clip.mp3", _noise(1.0, 22_050, seed=3), 22_050, format="MP3")
    (root / "good" / "notes.txt").write_text("not audio")  # filtered out by input.extensions
    sf.write(root / "long_60s.wav", _noise(60.0, RATE, seed=4), RATE)
    sf.write(root / "phone_8k.wav", _noise(1.0, 8_000, seed=5), 8_000)
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(64)))
    (root / "empty.wav").write_bytes(b"")
    (root / "unsupported.txt").write_text("hello")
    return root


def _expected_array(path: Path) -> np.ndarray:
    """What load_audio must hand the pipeline: the mean of the channels, resampled by soxr."""
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1, dtype=np.float32)
    return mono if rate == RATE else soxr.resample(mono, rate, RATE)


@functools.lru_cache(maxsize=None)
def _plain(task: str, model_name: str):
    from transformers import pipeline

    from composer.testing import tiny_model_path

    return pipeline(task, model=str(tiny_model_path(model_name)))


def _hydra(value: object) -> str:
    """A Python value in Hydra's override syntax (JSON's quoted keys do not parse there)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_hydra(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_hydra(item) for item in value) + "]"
    return f"'{value}'" if isinstance(value, str) else str(value)


def _run(tmp_path: Path, *overrides: str) -> api.RunResult:
    return api.run([*overrides, *COMMON], run_dir=tmp_path / "run")


def test_load_audio_mixes_down_and_resamples_to_the_models_rate(clips: Path) -> None:
    """The stage reads the rate from the model's feature extractor and matches soxr exactly."""
    path = clips / "good" / "a_stereo_44k.wav"
    _, graph = api.plan(["experiment=asr", CTC, f"input.records=[{path}]", *COMMON])
    load = next(stage for stage in graph.stages() if stage.name == "load_audio")
    assert load.target_rate() == 16_000  # read from preprocessor_config.json, no weights loaded
    [record] = load.process([{"id": "x", "audio": str(path)}])
    expected = _expected_array(path)
    assert sf.info(path).channels == 2 and sf.info(path).samplerate == 44_100
    assert record["audio"].ndim == 1 and record["audio"].dtype == np.float32
    assert record["audio"].shape == expected.shape == (24_000,)
    np.testing.assert_allclose(record["audio"], expected, rtol=0, atol=1e-6)
    summary = to_jsonable(record["audio"])
    assert summary["sampling_rate"] == 16_000 and summary["samples"] == 24_000 and summary["seconds"] == 1.5


def test_asr_on_a_file_via_the_cli(clips: Path, tmp_path: Path) -> None:
    path = clips / "good" / "b_tone.flac"
    done = run_cli("run", "experiment=asr", CTC, f"input.records=[{path}]", f"hydra.run.dir={tmp_path / 'run'}", *COMMON, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [output] = [json.loads(line) for line in (tmp_path / "run" / "outputs.jsonl").read_text().splitlines()]
    expected = _plain("automatic-speech-recognition", "automatic-speech-recognition")(_expected_array(path))
    assert output["prediction"] == expected and isinstance(expected["text"], str) and expected["text"]
    assert output["audio"]["sampling_rate"] == 16_000 and output["audio"]["samples"] == 16_000


@pytest.mark.parametrize("model", [CTC, WHISPER], ids=["wav2vec2-ctc", "whisper"])
def test_asr_on_a_list_of_files_of_every_format(clips: Path, tmp_path: Path, model: str) -> None:
    files = sorted((clips / "good").rglob("*.*"))
    audio = [f for f in files if f.suffix != ".txt"]
    assert [f.suffix for f in audio] == [".wav", ".flac", ".ogg", ".mp3"]
    result = _run(tmp_path, "experiment=asr", model, f"input.records=[{','.join(map(str, audio))}]")
    assert result.status == "complete", result.errors()
    outputs = result.outputs()
    name = model.split(":", 1)[1]
    plain = _plain("automatic-speech-recognition", name)
    assert [o["audio"]["samples"] for o in outputs] == [_expected_array(f).size for f in audio]
    for output, path in zip(outputs, audio):
        assert_close(output["prediction"], to_jsonable(plain(_expected_array(path))), where=path.name)
    batching = result.manifest()["stages"]["model"]["batching"]
    if model == CTC:  # wav2vec2's extractor pads without an attention mask: one clip per batch, said why
        assert batching["batch_size"] == 1 and "without an attention mask" in batching["one_record_because"]
        assert result.manifest()["counts"]["batches"] == len(audio)
    else:
        assert batching["batch_size"] == 2 and "one_record_because" not in batching


@pytest.mark.parametrize("unit", ["char", "word"])
def test_ctc_timestamps(clips: Path, tmp_path: Path, unit: str) -> None:
    path = clips / "good" / "a_stereo_44k.wav"
    result = _run(tmp_path, "experiment=asr-timestamps", CTC, f"input.records=[{path}]", f"call.return_timestamps={unit}")
    [output] = result.outputs()
    chunks = output["prediction"]["chunks"]
    expected = _plain("automatic-speech-recognition", "automatic-speech-recognition")(_expected_array(path), return_timestamps=unit)
    assert_close(output["prediction"], to_jsonable(expected))
    assert chunks and all(0 <= c["timestamp"][0] <= c["timestamp"][1] <= 1.5 for c in chunks)
    if unit == "char":
        assert "".join(c["text"] for c in chunks).replace(" ", "") == output["prediction"]["text"].replace(" ", "")


def test_whisper_timestamps(clips: Path, tmp_path: Path) -> None:
    path = clips / "good" / "b_tone.flac"
    result = _run(tmp_path, "experiment=asr-timestamps", WHISPER, f"input.records=[{path}]", "call.return_timestamps=true")
    [output] = result.outputs()
    expected = _plain("automatic-speech-recognition", "automatic-speech-recognition-whisper")(_expected_array(path), return_timestamps=True)
    assert output["prediction"]["chunks"] and all(len(c["timestamp"]) == 2 for c in output["prediction"]["chunks"])
    assert_close(output["prediction"], to_jsonable(expected))


@pytest.mark.parametrize(
    "model,timestamps,name",
    [(WHISPER, "true", "automatic-speech-recognition-whisper"), (CTC, "char", "automatic-speech-recognition")],
    ids=["whisper", "wav2vec2-ctc"],
)
def test_chunked_long_audio_keeps_timestamped_chunks(clips: Path, tmp_path: Path, model: str, timestamps: str, name: str) -> None:
    """A 60 s file through 30 s windows: chunks span both windows, as pipeline(chunk_length_s=30) gives."""
    path = clips / "long_60s.wav"
    result = _run(tmp_path, "experiment=asr-long", model, f"input.records=[{path}]", f"call.return_timestamps={timestamps}")
    assert result.config()["pipeline"]["chunk_length_s"] == 30
    [output] = result.outputs()
    chunks = output["prediction"]["chunks"]
    assert chunks and max(c["timestamp"][1] for c in chunks) > 30  # stitched across the window boundary
    plain = _plain("automatic-speech-recognition", name)
    expected = plain(_expected_array(path), chunk_length_s=30, return_timestamps=True if timestamps == "true" else timestamps)
    assert_close(output["prediction"], to_jsonable(expected))


def test_folder_of_audio_streams_with_a_limit(clips: Path, tmp_path: Path) -> None:
    result = _run(tmp_path, "experiment=asr-dataset", CTC, "input=audio_folder", f"input.path={clips / 'good'}", "input.limit=3")
    assert result.status == "complete", result.errors()
    outputs = result.outputs()
    # Sorted relative paths, .txt filtered out by the extension list, stopped after 3.
    assert [o["id"] for o in outputs] == ["a_stereo_44k.wav", "b_tone.flac", "nested/c_clip.ogg"]
    plain = _plain("automatic-speech-recognition", "automatic-speech-recognition")
    for output in outputs:
        assert_close(output["prediction"], to_jsonable(plain(_expected_array(clips / "good" / output["id"]))), where=output["id"])


def test_datasets_audio_column_decoded_by_our_stage(clips: Path, tmp_path: Path) -> None:
    """A parquet dataset with an Audio column (as `datasets` writes it), iterated undecoded and streamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [clips / "good" / "a_stereo_44k.wav", clips / "good" / "b_tone.flac", clips / "corrupt.wav", clips / "phone_8k.wav"]
    audio = pa.array([{"bytes": f.read_bytes(), "path": f.name} for f in files], type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"audio": audio, "uid": [f.stem for f in files]})
    features = {"audio": {"_type": "Audio"}, "uid": {"dtype": "string", "_type": "Value"}}
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    data = tmp_path / "speech.parquet"
    pq.write_table(table, data)
    result = _run(
        tmp_path, "experiment=asr-dataset", CTC, "input=audio_dataset", "input.path=parquet",
        f"input.data_files={data}", "input.id_field=uid", "input.limit=3",
    )
    assert [o["id"] for o in result.outputs()] == ["a_stereo_44k", "b_tone"]
    [error] = result.errors()
    assert error["id"] == "corrupt" and error["stage"] == "load_audio" and "not a readable audio file" in error["message"]
    plain = _plain("automatic-speech-recognition", "automatic-speech-recognition")
    for output, path in zip(result.outputs(), files):
        assert_close(output["prediction"], to_jsonable(plain(_expected_array(path))))


def test_audio_classification(clips: Path, tmp_path: Path) -> None:
    audio = [clips / "good" / "a_stereo_44k.wav", clips / "phone_8k.wav"]
    result = _run(tmp_path, "experiment=audio-classification", "model.id=tiny:audio-classification", f"input.records=[{','.join(map(str, audio))}]")
    plain = _plain("audio-classification", "audio-classification")
    for output, path in zip(result.outputs(), audio):
        assert [p["label"] in ("speech", "music", "noise") for p in output["prediction"]] == [True, True]
        assert_close(output["prediction"], to_jsonable(plain(_expected_array(path), top_k=2)))


def test_raw_arrays_at_any_rate(tmp_path: Path) -> None:
    """Inline samples: {array, sampling_rate} is resampled (channels-first arrays mixed down); a
    bare list is taken at the model's rate."""
    at_8k = _noise(0.1, 8_000).round(4).tolist()  # short: Hydra parses every number
    at_16k = _noise(0.1, RATE, seed=1).round(4).tolist()
    stereo = _noise(0.05, RATE, channels=2, seed=2).T.round(4).tolist()  # [left, right]
    records = _hydra([
        {"id": "rated", "audio": {"array": at_8k, "sampling_rate": 8_000}},
        {"id": "bare", "audio": at_16k},
        {"id": "stereo", "audio": {"array": stereo, "sampling_rate": RATE}},
    ])
    result = _run(tmp_path, "experiment=asr", CTC, f"input.records={records}", "input.id_field=id")
    outputs = {o["id"]: o for o in result.outputs()}
    assert outputs["rated"]["audio"]["samples"] == 1_600 and outputs["bare"]["audio"]["samples"] == 1_600
    plain = _plain("automatic-speech-recognition", "automatic-speech-recognition")
    resampled = soxr.resample(np.asarray(at_8k, dtype=np.float32), 8_000, RATE)
    assert_close(outputs["rated"]["prediction"], to_jsonable(plain(resampled)))
    assert_close(outputs["bare"]["prediction"], to_jsonable(plain(np.asarray(at_16k, dtype=np.float32))))
    assert outputs["stereo"]["audio"]["samples"] == 800
    assert_close(outputs["stereo"]["prediction"], to_jsonable(plain(np.asarray(stereo, dtype=np.float32).mean(axis=0))))


def test_result_cache_serves_audio_without_loading_the_model(clips: Path, tmp_path: Path) -> None:
    """Cache keys hold the decoded samples' hash; a run of hits reads the rate from the processor
    config alone and never loads the model."""
    path = clips / "good" / "a_stereo_44k.wav"
    overrides = ["experiment=asr", CTC, f"input.records=[{path}]", "cache=on", f"cache.path={tmp_path / 'cache.sqlite'}", *COMMON]
    first = api.run(overrides, run_dir=tmp_path / "first")
    second = api.run(overrides, run_dir=tmp_path / "second")
    assert second.outputs() == first.outputs()
    model = second.manifest()["stages"]["model"]
    assert model["cache"]["hits"] == 1 and model["loaded"] is False
    assert second.outputs()[0]["audio"]["samples"] == 24_000  # resampled to 16 kHz without the model loaded


def test_gold_transcripts_give_wer_and_cer(clips: Path, tmp_path: Path) -> None:
    from composer.metrics import error_rates

    gold = {"good/a_stereo_44k.wav": "HELLO WORLD", "good/b_tone.flac": "GOOD MORNING"}
    records = _hydra([{"id": name, "audio": str(clips / name), "transcript": text} for name, text in gold.items()])
    result = _run(tmp_path, "experiment=asr", CTC, f"input.records={records}", "input.id_field=id", "input.label_field=transcript")
    texts = [o["prediction"]["text"] for o in result.outputs()]
    quality = result.metrics()["quality"]["model"]
    assert quality["n"] == 2 and quality["wer"] == error_rates(texts, list(gold.values()))["wer"] > 0
    assert quality["cer"] == error_rates(texts, list(gold.values()))["cer"]


def test_bad_audio_files_fail_one_record_each(clips: Path, tmp_path: Path) -> None:
    names = ["good/b_tone.flac", "corrupt.wav", "empty.wav", "unsupported.txt", "missing.wav", "phone_8k.wav"]
    records = _hydra([{"id": name, "audio": str(clips / name)} for name in names])
    result = _run(tmp_path, "experiment=asr", CTC, f"input.records={records}", "input.id_field=id")
    assert result.status == "completed_with_errors" and result.exit_code == 1
    # A file at another rate is no error: it is resampled to the model's 16 kHz.
    assert [(o["id"], o["audio"]["sampling_rate"], o["audio"]["samples"]) for o in result.outputs()] == [
        ("good/b_tone.flac", 16_000, 16_000), ("phone_8k.wav", 16_000, 16_000),
    ]
    errors = {e["id"]: e for e in result.errors()}
    assert set(errors) == {"corrupt.wav", "empty.wav", "unsupported.txt", "missing.wav"}
    assert all(e["stage"] == "load_audio" and repr(e["id"]) in e["message"] for e in errors.values())
    assert "not a readable audio file" in errors["corrupt.wav"]["message"]
    assert "not a readable audio file" in errors["unsupported.txt"]["message"]
    assert "empty (0 bytes)" in errors["empty.wav"]["message"]
    assert errors["missing.wav"]["error_type"] == "FileNotFoundError" and "no such file" in errors["missing.wav"]["message"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the size-capped client hangs up mid-body, by design: no traceback on stderr


@pytest.fixture()
def served(clips: Path):
    """The clips folder over HTTP on localhost (no network needed)."""
    server = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(clips)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_audio_by_url_with_size_cap(clips: Path, tmp_path: Path, served: str) -> None:
    records = _hydra([
        {"id": "ok", "audio": f"{served}/good/b_tone.flac"},
        {"id": "absent", "audio": f"{served}/nope.wav"},
        {"id": "big", "audio": f"{served}/long_60s.wav"},
    ])
    result = _run(
        tmp_path, "experiment=asr", CTC, f"input.records={records}", "input.id_field=id",
        "preprocess=[{type: load_audio, field: audio, max_bytes: 1000000, timeout: 5}]",
    )
    [output] = result.outputs()
    assert output["id"] == "ok" and output["audio"]["samples"] == 16_000
    errors = {e["id"]: e["message"] for e in result.errors()}
    assert "HTTP 404" in errors["absent"] and "max_bytes" in errors["big"]


def test_rate_from_names_a_missing_model_stage() -> None:
    with pytest.raises(ConfigError) as raised:
        api.plan(["experiment=asr", CTC, "input.records=[x.wav]", "preprocess=[{type: load_audio, rate_from: modle}]"])
    assert any(i.path == "preprocess[0].rate_from" and "did you mean 'model'" in i.message for i in raised.value.issues)


def test_decoded_audio_is_summarised_in_json() -> None:
    from composer.stages.audio import AudioArray

    samples = np.linspace(-1, 1, 32_000, dtype=np.float32)
    audio = AudioArray.of(samples, 16_000)
    summary = to_jsonable({"audio": audio})["audio"]
    assert summary == {"sampling_rate": 16_000, "samples": 32_000, "seconds": 2.0, "sha256": summary["sha256"]}
    assert summary["sha256"] == to_jsonable(AudioArray.of(samples.copy(), 16_000))["sha256"]
    assert isinstance(audio[:10], np.ndarray)


def test_cached_ctc_runs_clips_alone_once_its_model_loads(clips: Path, tmp_path: Path) -> None:
    """With the result cache the model loads lazily, after the window was planned in batches of
    3; wav2vec2-base pads without an attention mask, so each clip must still run alone (its
    output would otherwise depend on its batch-mates' lengths)."""
    audio = [clips / "good" / "b_tone.flac", clips / "long_60s.wav", clips / "phone_8k.wav"]
    result = api.run(["experiment=asr", CTC, f"input.records=[{','.join(map(str, audio))}]", "cache=on",
                      f"cache.path={tmp_path / 'cache.sqlite'}", *COMMON, "batch_size=3"], run_dir=tmp_path / "run")
    assert result.status == "complete", result.errors()
    assert "without an attention mask" in result.manifest()["stages"]["model"]["batching"]["one_record_because"]
    plain = _plain("automatic-speech-recognition", "automatic-speech-recognition")
    for output, path in zip(result.outputs(), audio):
        assert_close(output["prediction"], to_jsonable(plain(_expected_array(path))), where=path.name)
