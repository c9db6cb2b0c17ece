"""Audio transforms: turn whatever a record holds for a sound into the mono float32 samples, at
the model's feature-extractor rate, that an audio pipeline gets.

Why our own stage: given a path or bytes, transformers' audio pipelines decode with the ffmpeg
binary, and given another rate they resample with torchaudio; neither is there beside a CPU
torch from PyPI (torchaudio/torchcodec wheels do not load with it). soundfile (libsndfile:
wav, flac, ogg, mp3) decodes and soxr resamples, here, so a file that cannot be read fails as
one record instead of ending the run, and the pipeline receives exactly the array it would
have been handed by a user who decoded the file themselves.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Literal

import numpy as np

from composer.records import Record
from composer.stages.base import FieldStage, ModelStage, Stage, require_field, reworded

AudioFrom = Literal["auto", "path", "url"]


class AudioArray(np.ndarray):
    """Mono float32 samples that know their rate and write themselves to JSON as a summary.

    A pipeline takes it as the plain ndarray it is; outputs.jsonl and cache keys get the
    rate, length and a hash of the samples instead of a million floats.
    """

    sampling_rate: int

    @classmethod
    def of(cls, samples: np.ndarray, sampling_rate: int) -> AudioArray:
        array = np.ascontiguousarray(samples, dtype=np.float32).view(cls)
        array.sampling_rate = int(sampling_rate)
        return array

    def __array_finalize__(self, obj: Any) -> None:
        self.sampling_rate = getattr(obj, "sampling_rate", 0)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its rate (an ndarray pickles only its data): records cross processes
        pickled, between the Ray executor's driver and actors."""
        constructor, arguments, state = super().__reduce__()[:3]
        return constructor, arguments, (state, self.sampling_rate)

    def __setstate__(self, state: tuple[Any, int]) -> None:
        array_state, self.sampling_rate = state
        super().__setstate__(array_state)

    def __json__(self) -> dict[str, Any]:
        samples = np.ascontiguousarray(self, dtype=np.float32)
        return {
            "sampling_rate": self.sampling_rate,
            "samples": int(samples.size),
            "seconds": round(samples.size / self.sampling_rate, 6) if self.sampling_rate else None,
            "sha256": hashlib.sha256(samples.tobytes()).hexdigest()[:16],
        }


class LoadAudio(FieldStage):
    """Load an audio field: decode, mix down to mono (audio pipelines take one channel), resample
    to the model's rate.

    The field may hold a path, an http(s) URL (fetched with `timeout` seconds and at most
    `max_bytes`), the bytes of a file, an undecoded `datasets` Audio value ({bytes, path}), a
    {array, sampling_rate} mapping, or raw samples (a list or array, taken to be at the target
    rate already, as transformers' pipelines take them); a file or bytes over `max_bytes` fail
    unread. Multichannel raw arrays are channels-first, the `datasets` convention. The target
    rate is `sampling_rate` if set, else that of the feature extractor of the model stage named
    by `rate_from`, so one config runs with a 16 kHz wav2vec2 and with any other rate a model
    was trained at.
    """

    # Thread-safe (soundfile and soxr hold no shared state): decoding runs in the prefetch thread,
    # overlapping the model's forward passes; the model stage is set up before any window is read.
    prefetchable = True

    def __init__(
        self,
        name: str,
        *,
        field: str = "audio",
        output_field: str | None = None,
        source: AudioFrom = "auto",
        sampling_rate: int | None = None,
        rate_from: str = "model",
        min_seconds: float = 0.0,
        timeout: float = 10.0,
        max_bytes: int = 100_000_000,
    ):
        super().__init__(name, field, output_field)
        if source not in ("auto", "path", "url"):
            raise ValueError(f"source must be auto, path or url, got {source!r}")
        if sampling_rate is not None and (not isinstance(sampling_rate, int) or sampling_rate < 1):
            raise ValueError(f"sampling_rate must be a positive integer or null (the model's rate), got {sampling_rate!r}")
        self.source = source
        self.sampling_rate, self.rate_from, self.min_seconds = sampling_rate, rate_from, min_seconds
        self.timeout, self.max_bytes = timeout, max_bytes
        self._rate_stage: Any = None
        self._model_rate: int | None = None  # read once: without a loaded pipeline it means a file read

    def bind(self, stages: dict[str, Stage]) -> list[Any]:
        """Find the model stage whose feature extractor sets the target rate (when not given)."""
        from composer.schema import ConfigIssue, did_you_mean

        if self.sampling_rate is not None:
            return []
        stage = stages.get(self.rate_from)
        if not isinstance(stage, ModelStage):
            models = [name for name, s in stages.items() if isinstance(s, ModelStage)]
            return [ConfigIssue(
                "rate_from",
                f"no model stage {self.rate_from!r} to read the sampling rate from (model stages: {', '.join(models) or 'none'})"
                + did_you_mean(self.rate_from, models) + "; or set sampling_rate",
            )]
        self._rate_stage = stage
        return []

    def target_rate(self) -> int:
        """The rate every record is resampled to: configured, or the model's feature extractor's."""
        if self.sampling_rate is not None:
            return self.sampling_rate
        if self._model_rate is None:
            if self._rate_stage is None:
                raise RuntimeError(f"stage {self.name!r}: set sampling_rate, or run it in a graph with a model stage")
            rate = self._rate_stage.feature_sampling_rate()
            if not rate:
                raise ValueError(f"model stage {self.rate_from!r} has no feature extractor with a sampling_rate; set {self.name}.sampling_rate")
            self._model_rate = int(rate)
        return self._model_rate

    def compute(self, record: Record) -> AudioArray:
        rate = self.target_rate()
        value = require_field(record, self.field, self.name)
        try:
            samples, source_rate = self._decode(value, rate)
            if samples.size == 0:
                raise ValueError("the audio has no samples")
            audio = AudioArray.of(resample(samples, source_rate, rate), rate)
        except (OSError, RuntimeError, ValueError, TypeError) as error:
            raise reworded(error, f"record {record['id']!r}: cannot read audio from field {self.field!r}: {error}") from None
        if audio.size < self.min_seconds * rate:
            raise ValueError(f"record {record['id']!r}: audio lasts {audio.size / rate:.3f} s, less than min_seconds={self.min_seconds}")
        return audio

    def _decode(self, value: Any, rate: int) -> tuple[np.ndarray, int]:
        """Mono float32 samples and their rate, from any form the field may hold."""
        if isinstance(value, AudioArray):
            return np.asarray(value), value.sampling_rate
        if isinstance(value, dict) and ("array" in value or "raw" in value):
            if "sampling_rate" not in value:
                raise ValueError("a mapping of samples needs sampling_rate next to array")
            return mixdown(np.asarray(value.get("array", value.get("raw")), dtype=np.float32), channels_first=True), int(value["sampling_rate"])
        if isinstance(value, (list, np.ndarray)):
            return mixdown(np.asarray(value, dtype=np.float32), channels_first=True), rate
        return decode_file(self._bytes(value))

    def _bytes(self, value: Any) -> bytes:
        from composer.fetch import media_bytes
        from composer.stages.vision import check_media_size

        check_media_size(value, source=self.source, max_bytes=self.max_bytes)  # before a byte is read
        return media_bytes(value, source=self.source, timeout=self.timeout, max_bytes=self.max_bytes,
                           expected="a path, URL, bytes, samples or {array, sampling_rate}")


def decode_file(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the rate of an encoded file (any format libsndfile reads)."""
    import soundfile

    if not data:
        raise ValueError("the file is empty (0 bytes)")
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as error:
        raise ValueError(f"not a readable audio file (soundfile: {error})") from None
    return mixdown(samples, channels_first=False), int(rate)


def mixdown(samples: np.ndarray, *, channels_first: bool) -> np.ndarray:
    """One channel: the mean of all channels (what ffmpeg's `-ac 1` gives the pipelines)."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise ValueError(f"expected samples of shape (n,) or 2 dimensions, got shape {samples.shape}")
    return samples.mean(axis=0 if channels_first else 1, dtype=np.float32)


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """`samples` at `target_rate`, by soxr's high-quality resampler (unchanged when equal)."""
    if source_rate == target_rate:
        return samples
    if source_rate < 1:
        raise ValueError(f"invalid sampling rate {source_rate} (sampling_rate must be >= 1)")
    import soxr

    return soxr.resample(samples, source_rate, target_rate)

