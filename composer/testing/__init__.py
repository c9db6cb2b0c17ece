"""Test helpers for composer that need no network (tiny offline Hugging Face models).

Names are resolved lazily (PEP 562) so ``import composer.testing`` stays cheap
and ``python -m composer.testing.tiny_models`` runs without a double import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from composer.testing.tiny_models import tiny_model_path
    from composer.testing.tiny_specs import TINY_MODELS, TinyModelSpec

__all__ = ["TINY_MODELS", "TinyModelSpec", "tiny_model_path"]

# name -> the module of this package that defines it
_HOMES = {"TINY_MODELS": "tiny_specs", "TinyModelSpec": "tiny_specs", "tiny_model_path": "tiny_models"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
