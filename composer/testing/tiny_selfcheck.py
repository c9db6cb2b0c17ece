"""Self-check of the tiny models: each builds byte-identically twice and runs its real pipeline.

Why a module of its own: it is a check run by hand (``python -m composer.testing.tiny_models
--self-check``) after changing a builder or upgrading transformers, not part of building or
caching; it holds the sample inputs of every task, which nothing else needs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from composer.testing.tiny_build import build_tiny_model, file_digests
from composer.testing.tiny_specs import TINY_MODELS


def self_check(names: list[str]) -> int:
    """Build each model twice (byte-identical?), then run its real pipeline; the number that failed."""
    import warnings

    import torch
    from transformers import pipeline

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    failures = 0
    inputs = {
        "text-classification": ["I love this product.", "The delivery was late and the box was broken."],
        "token-classification": ["Maria Lopez lives in Paris.", "John flew from London to Tokyo."],
        "zero-shot-classification": ["The production database is down, help now!"],
        "fill-mask": ["The capital of France is [MASK].", "I [MASK] this product."],
        "feature-extraction": ["Hello world.", "A slightly longer sentence about the weather in Oslo."],
        "text-generation": ["Once upon a time", "The weather today is"],
        **_vision_inputs(),
        **_audio_inputs(),
    }
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            spec = TINY_MODELS[name]
            start = time.perf_counter()
            a = build_tiny_model(name, Path(scratch) / f"{name}-a")
            elapsed = time.perf_counter() - start
            b = build_tiny_model(name, Path(scratch) / f"{name}-b")
            same = file_digests(a) == file_digests(b)
            kwargs: dict[str, Any] = {}
            if spec.task == "zero-shot-classification":
                kwargs = {"candidate_labels": ["urgent", "not urgent"]}
            elif spec.task in ("text-generation", "image-text-to-text"):
                kwargs = {"max_new_tokens": 5, "do_sample": False}
            try:
                pipe = pipeline(spec.task, model=str(a))
                result = pipe(inputs[spec.task], **kwargs)
                ok = same
                shown = repr(result)[:110]
            except Exception as exc:  # noqa: BLE001 - report, keep checking the rest
                ok = False
                shown = f"{type(exc).__name__}: {exc}"[:200]
            failures += not ok
            size_kb = sum(p.stat().st_size for p in a.iterdir()) / 1024
            print(
                f"{'OK  ' if ok else 'FAIL'} {name:32s} build {elapsed:5.2f}s {size_kb:6.0f} KiB"
                f" deterministic={same} -> {shown}"
            )
    return failures


def _vision_inputs() -> dict[str, list[Any]]:
    """A noise image for each image task's self-check (document QA gets word boxes, no OCR)."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype("uint8"))
    words = [("invoice", [10, 10, 200, 60]), ("number", [210, 10, 400, 60]), ("12345", [410, 10, 600, 60])]
    return {
        "image-classification": [image],
        "object-detection": [image],
        "document-question-answering": [{"image": image, "question": "What is the invoice number?", "word_boxes": words}],
        # one chat: the pipeline batches chats only (a list of {images, text} reads as one chat)
        "image-text-to-text": [[{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is shown?"}]}]],
    }


def _audio_inputs() -> dict[str, list[Any]]:
    """One second of seeded noise at 16 kHz (every tiny audio model's rate) for each audio task."""
    import numpy as np

    noise = (np.random.default_rng(0).standard_normal(16_000) * 0.1).astype("float32")
    return {"automatic-speech-recognition": [noise], "audio-classification": [noise]}
