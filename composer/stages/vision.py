"""Image transforms: turn whatever a record holds for an image into the PIL image a pipeline gets.

Sources only say where an image is (a path, a URL, base64 text, the {bytes, path} of an
undecoded `datasets` column) so that a file that cannot be read fails as one record, here,
instead of ending the iteration of the source.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any, Literal

from composer.records import Record
from composer.stages.base import FieldStage, Stage, require_field, reworded

ImageFrom = Literal["auto", "path", "url", "base64"]


class LoadImage(FieldStage):
    """Load an image field: decode, apply the EXIF orientation, convert to RGB, resize/crop if asked.

    `source: auto` reads http(s) URLs, `data:image/...;base64,` URIs, paths, bytes, {bytes, path}
    mappings and PIL images; `base64` reads bare base64 text (which cannot be told apart from a
    path reliably). URLs are fetched with `timeout` seconds and at most `max_bytes`; a local file or
    bytes larger than `max_bytes` fail unread.
    `crop` ([left, top, right, bottom] in pixels of the oriented image) is applied before
    `resize` ([width, height]); `max_side` shrinks larger images keeping their aspect ratio.
    Images narrower or lower than `min_side` pixels fail: transformers' image processors guess
    the channel axis from the array's shape and misread an image 1 or 3 pixels high.
    """

    # Thread-safe (each call opens its own file, URL connection and PIL image): decoding and
    # fetching run in the prefetch thread, overlapping the model's forward passes.
    prefetchable = True

    def __init__(
        self,
        name: str,
        *,
        field: str = "image",
        output_field: str | None = None,
        source: ImageFrom = "auto",
        mode: str = "RGB",
        resize: list[int] | None = None,
        crop: list[int] | None = None,
        max_side: int | None = None,
        min_side: int = 4,
        timeout: float = 10.0,
        max_bytes: int = 20_000_000,
    ):
        super().__init__(name, field, output_field)
        if source not in ("auto", "path", "url", "base64"):
            raise ValueError(f"source must be auto, path, url or base64, got {source!r}")
        _check_ints("resize", resize, 2)
        _check_ints("crop", crop, 4)
        # Mistakes here would fail every record one by one; they are config errors instead.
        if resize is not None and min(resize) < 1:
            raise ValueError(f"resize is [width, height], each at least 1, got {resize!r}")
        if crop is not None and not (crop[2] > crop[0] and crop[3] > crop[1]):
            raise ValueError(f"crop is [left, top, right, bottom] with right > left and bottom > top, got {crop!r}")
        if max_side is not None and (not isinstance(max_side, int) or max_side < 1):
            raise ValueError(f"max_side must be a positive integer or null, got {max_side!r}")
        self.source, self.mode = source, mode
        self.resize, self.crop, self.max_side, self.min_side = resize, crop, max_side, min_side
        self.timeout, self.max_bytes = timeout, max_bytes

    def compute(self, record: Record) -> Any:
        from PIL import Image, ImageOps

        value = require_field(record, self.field, self.name)
        try:
            image = value if isinstance(value, Image.Image) else Image.open(io.BytesIO(self._bytes(value)))
            image = ImageOps.exif_transpose(image)  # also loads the pixels: truncated files fail here
            if image.mode != self.mode:
                image = image.convert(self.mode)
        except Image.UnidentifiedImageError:
            raise OSError(f"record {record['id']!r}: field {self.field!r}{self._named(value)} is not an image format PIL can read") from None
        except (OSError, ValueError, TypeError, SyntaxError, Image.DecompressionBombError) as error:
            raise reworded(error, f"record {record['id']!r}: cannot read image from field {self.field!r}{self._named(value)}: {error}") from None
        if self.crop:
            image = image.crop(tuple(self.crop))
        if self.max_side and max(image.size) > self.max_side:
            image.thumbnail((self.max_side, self.max_side))
        if self.resize:
            image = image.resize(tuple(self.resize))
        if min(image.size) < self.min_side:
            raise ValueError(
                f"record {record['id']!r}: image is {image.width}x{image.height} pixels, smaller than "
                f"min_side={self.min_side} (image processors misread such images)"
            )
        return image

    def _named(self, value: Any) -> str:
        """The file or URL an image came from, for messages (a record id may be a content hash)."""
        if isinstance(value, dict) and value.get("path"):
            return f" ({value['path']})"
        if isinstance(value, str) and self.source != "base64" and not value.startswith("data:") and len(value) < 300:
            return f" ({value})"
        return ""

    def _bytes(self, value: Any) -> bytes:
        from composer.fetch import media_bytes

        if isinstance(value, str) and (self.source == "base64" or (self.source == "auto" and value.startswith("data:"))):
            return _base64_bytes(value)
        check_media_size(value, source=self.source, max_bytes=self.max_bytes)
        return media_bytes(value, source=self.source, timeout=self.timeout, max_bytes=self.max_bytes,
                           expected="a path, URL, base64 text, bytes or an image")


def check_media_size(value: Any, *, source: str, max_bytes: int) -> None:
    """Refuse a local file (a path, or an undecoded `datasets` value naming one) or in-memory
    bytes larger than `max_bytes` before reading it, as a URL fetch stops at the cap: a
    multi-gigabyte file behind an innocent name fails as one record instead of filling memory."""
    from composer.fetch import is_url

    if isinstance(value, (bytes, bytearray)):
        if len(value) > max_bytes:
            raise ValueError(f"{len(value)} bytes exceeds the cap of {max_bytes} (max_bytes)")
        return
    if isinstance(value, dict) and not value.get("bytes") and value.get("path"):
        path = value["path"]
    elif isinstance(value, str) and source != "url" and not is_url(value) and not value.startswith("data:"):
        path = value
    else:
        return
    try:
        size = Path(path).expanduser().stat().st_size
    except (OSError, ValueError):
        return  # reading it reports what is wrong (no such file)
    if size > max_bytes:
        raise ValueError(f"{path}: {size} bytes exceeds the cap of {max_bytes} (max_bytes); the file was not read")


def _base64_bytes(text: str) -> bytes:
    """Bare base64 or a data URI (`data:image/png;base64,...`)."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise ValueError(f"data URI is not base64-encoded: {header[:40]!r}")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as error:
        raise ValueError(f"invalid base64 image: {error}") from None


def _check_ints(key: str, value: Any, length: int) -> None:
    if value is not None and not (
        isinstance(value, (list, tuple)) and len(value) == length and all(isinstance(v, int) and v >= 0 for v in value)
    ):
        raise ValueError(f"{key} must be a list of {length} non-negative integers, got {value!r}")


class ImageChat(Stage):
    """Build a one-turn chat (an image, then a prompt) for image-text-to-text models.

    The image-text-to-text pipeline batches only chats (a list of {images, text} mappings reads
    as one malformed chat), so each record gets its own chat: `[{role: user, content: [image,
    text]}]`. `prompt` is a template over record fields, like the template stage.
    """

    prefetchable = True  # cheap and thread-safe: runs in the prefetch thread, ahead of the model

    def __init__(self, name: str, *, prompt: str, image_field: str = "image", output_field: str = "messages"):
        from composer.stages.text import Template

        super().__init__(name)
        self.template = Template(name, template=prompt, output_field=output_field)
        self.image_field, self.output_field = image_field, output_field
        self.reads = (image_field, *self.template.reads)
        self.writes = (output_field,)

    def process(self, records: list[Record]) -> list[Record]:
        chats = [self._chat(record) for record in records]
        for record, chat in zip(records, chats):
            record[self.output_field] = chat
        return records

    def _chat(self, record: Record) -> list[dict[str, Any]]:
        image = require_field(record, self.image_field, self.name)
        text = self.template.process([dict(record)])[0][self.output_field]  # formatted on a copy of the record
        return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]
