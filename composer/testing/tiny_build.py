"""Build one tiny model into a folder: dispatch on its family, save it, write its manifest.

Why a module of its own: building is what the cache (tiny_models, atomic install) and the
self-check (tiny_selfcheck, build twice and compare) both do, each in its own way, so it sits
below both.  It knows every builder table (tiny_text, tiny_vision, tiny_audio), the manifest that
marks a finished build, and :data:`BUILDER_VERSION`, which names the cache folders.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from composer.testing import tiny_audio, tiny_text, tiny_vision
from composer.testing.tiny_specs import spec_for

__all__ = ["BUILDER_VERSION", "MANIFEST_NAME", "build_tiny_model", "file_digests"]

#: Bump whenever a change to any tiny_* module alters the bytes of a built model: the version
#: is part of the cache folder name (tiny_models.tiny_model_folder), so stale caches are never
#: reused.  Nothing else keys the cache: a change that keeps the bytes keeps the version.
BUILDER_VERSION = 2

#: Written last into every model folder; its presence marks a complete build.
MANIFEST_NAME = "composer_tiny_model.json"

#: family -> builder, ``(spec) -> (model, [objects saved beside it])``.
BUILDERS = {**tiny_text.BUILDERS, **tiny_vision.BUILDERS, **tiny_audio.BUILDERS}


def file_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 of every file under `path`, keyed by POSIX relative path (sorted).

    Used for the manifest and to check that two builds are byte-identical.
    """
    root = Path(path)
    digests: dict[str, str] = {}
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digests[file.relative_to(root).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def build_tiny_model(name: str, dest: str | os.PathLike[str]) -> Path:
    """Build tiny model `name` directly into the (empty or new) folder `dest`.

    Not atomic: use :func:`composer.testing.tiny_models.tiny_model_path` unless you own `dest`
    (e.g. a determinism check building twice).  Writes config.json, model.safetensors, the
    tokenizer (or processor) files, generation_config.json for generative models, and finally
    the manifest.
    """
    spec = spec_for(name)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)

    import transformers
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" noise
    try:
        # the tokenizer, (image) processor or feature extractor
        model, (tokenizer,) = BUILDERS[spec.family](spec)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()

    manifest = {
        "name": spec.name,
        "task": spec.task,
        "architecture": spec.architecture,
        "builder_version": BUILDER_VERSION,
        "transformers_version": transformers.__version__,
        "quant_skip_modules": list(spec.quant_skip_modules),
        "files": file_digests(out),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out
