"""What a sentence-transformers model's own files say about using it, read without loading it.

A model published for sentence-transformers carries settings the plain transformers pipeline
never reads: `sentence_bert_config.json` (`max_seq_length`: all-MiniLM-L6-v2 was trained on, and
is used at, 256 tokens, while its tokenizer allows 512), `modules.json` (the module chain: a
Normalize module means unit vectors) and the pooling module's `config.json` (mean, max or CLS
pooling). The model stage truncates at that max_seq_length unless the config says otherwise,
and states all of it in the manifest, so that composer's vectors are the ones the model's
authors meant, and a user sees where they differ from `pipeline()`'s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SENTENCE_CONFIG = "sentence_bert_config.json"
MODULES = "modules.json"
POOLING_KEYS = {  # 1_Pooling/config.json key -> composer's pooling mode (composer.stages.pooling)
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}


@dataclass(frozen=True)
class SentenceSettings:
    """A sentence-transformers model's settings; None where its files say nothing."""

    max_seq_length: int | None
    pooling: str | None  # a pooling mode, or modes joined by "+" (sentence-transformers concatenates those)
    normalize: bool | None  # whether its module chain ends in unit vectors

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_sentence_settings(load_from: str, revision: str | None) -> SentenceSettings | None:
    """The settings in the model's files (a local folder, or a hub id's files, cached or fetched
    like its weights), or None for a model that is not a sentence-transformers one."""
    sentence = _read_json(load_from, SENTENCE_CONFIG, revision)
    modules = _read_json(load_from, MODULES, revision)
    if sentence is None and modules is None:
        return None
    chain = modules if isinstance(modules, list) else []
    pooling_path = next((m.get("path") for m in chain if str(m.get("type", "")).endswith(".Pooling")), "1_Pooling")
    pooling = _read_json(load_from, f"{pooling_path}/config.json", revision) if pooling_path else None
    modes = [mode for key, mode in POOLING_KEYS.items() if isinstance(pooling, dict) and pooling.get(key)]
    length = sentence.get("max_seq_length") if isinstance(sentence, dict) else None
    return SentenceSettings(
        max_seq_length=length if isinstance(length, int) and length > 0 else None,
        pooling="+".join(modes) or None,
        normalize=any(str(m.get("type", "")).endswith(".Normalize") for m in chain) if chain else None,
    )


def _read_json(load_from: str, name: str, revision: str | None) -> Any:
    """One small JSON file of the model, or None when it has none (or it cannot be read)."""
    folder = Path(load_from)
    if folder.is_dir():
        path = folder / name
    else:
        from transformers.utils import cached_file

        try:
            found = cached_file(load_from, name, revision=revision, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        except OSError:  # an unknown repository, a gated one: its weights will say so when they load
            return None
        if found is None:
            return None
        path = Path(found)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
