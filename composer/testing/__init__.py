"""Test helpers for composer that need no network (tiny offline Hugging Face models).

Names are resolved lazily (PEP 562) so ``import composer.testing`` stays cheap
and ``python -m composer.testing.tiny_models`` runs without a double import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from composer.testing.tiny_models import TINY_MODELS, TinyModelSpec, tiny_model_path

__all__ = ["TINY_MODELS", "TinyModelSpec", "tiny_model_path"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from composer.testing import tiny_models

        return getattr(tiny_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
