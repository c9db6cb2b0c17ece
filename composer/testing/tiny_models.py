"""Tiny, randomly initialised, deterministic Hugging Face models built offline.

Why this exists: tests and the offline demo need *real* ``transformers``
checkpoints (config + safetensors weights + fast tokenizer) that
``transformers.pipeline(task, model=path)`` and ``AutoTokenizer`` accept, but
the Hugging Face Hub is unreachable here and real checkpoints are far too big
for a test suite.  So we build small models locally:

* the tokenizer is *trained* with the ``tokenizers`` library on a small English
  corpus shipped next to this file (``corpus.txt``), so it tokenises ordinary
  sentences into real sub-words rather than ``[UNK]``;
* the weights are random but seeded, so every build produces the same bytes
  (tests can compare outputs across runs and machines with the same library
  versions);
* each model is built once into a cache folder and moved into place with an
  atomic rename, so parallel test workers (pytest-xdist) or two CLI runs never
  see a half-written model.

Heavy libraries (torch, transformers, tokenizers) are imported inside the
functions that need them, so importing these modules stays cheap.

This module is the entry point: where a model lives in the cache
(:func:`default_cache_root`, :func:`tiny_model_folder`), building it there on
first use (:func:`tiny_model_path`), and the command line.  The rest, one job a
module, lowest first: tiny_specs (the :data:`TINY_MODELS` table, seeding, label
maps), tiny_tokenizers (tokenizers trained on the corpus), tiny_text,
tiny_vision and tiny_audio (the builders of each family), tiny_build (build one
model into a folder, with its manifest) and tiny_selfcheck.

Run ``python -m composer.testing.tiny_models`` to build every model (warms the
cache for the demo); add ``--self-check`` to also verify determinism and run a
real pipeline on each.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from composer.testing.tiny_build import BUILDER_VERSION, MANIFEST_NAME, build_tiny_model
from composer.testing.tiny_specs import TINY_MODELS, spec_for

__all__ = ["CACHE_ENV_VAR", "default_cache_root", "tiny_model_folder", "tiny_model_path"]

#: Environment variable naming the root of composer's cache.
CACHE_ENV_VAR = "COMPOSER_CACHE_DIR"

# Temp build folders older than this are assumed abandoned (killed process).
_STALE_TMP_SECONDS = 3600


def default_cache_root() -> Path:
    """Root of composer's cache: ``$COMPOSER_CACHE_DIR`` or ``~/.cache/composer``.

    Read at call time (not import time) so tests can point it at a tmp folder
    with ``monkeypatch.setenv``.
    """
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "composer"


def tiny_model_folder(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where tiny model `name` is (or will be) built; nothing is built here."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return root / "tiny-models" / f"{name}-v{BUILDER_VERSION}"


def _is_complete(path: Path) -> bool:
    """A folder is usable only once its manifest (written last) is there."""
    return (path / MANIFEST_NAME).is_file()


def tiny_model_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder of tiny model `name`, building it on first use (idempotent, atomic).

    The folder is ``<root>/tiny-models/<name>-v<BUILDER_VERSION>`` where
    ``<root>`` is `cache_dir` if given, else ``$COMPOSER_CACHE_DIR``, else
    ``~/.cache/composer``.  The model is built in a temp folder beside the
    destination and renamed into place, so a concurrent reader sees either no
    folder or a complete one; if another process finishes first, its copy is
    kept (both are byte-identical anyway) and ours is discarded.

    Raises ``KeyError`` for a name not in :data:`TINY_MODELS`.
    """
    spec_for(name)
    dest = tiny_model_folder(name, cache_dir)
    if _is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        build_tiny_model(name, tmp)
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the cache may be shared
        _move_into_place(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not _is_complete(dest):  # pragma: no cover - defensive
        raise RuntimeError(f"tiny model {name!r} could not be installed at {dest}")
    return dest


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Atomically rename `tmp` to `dest`, keeping a complete `dest` that won the race."""
    for _attempt in range(3):
        try:
            os.rename(tmp, dest)  # atomic; fails if dest is a non-empty folder
            return
        except OSError:
            if _is_complete(dest):
                return  # someone else finished first: keep theirs
            if not dest.exists():
                continue  # vanished between our rename and the check: retry
            # An incomplete leftover (e.g. hand-made or from an old, non-atomic
            # builder): move it aside atomically, then delete it.
            trash = dest.with_name(f".{dest.name}.stale-{uuid.uuid4().hex}")
            try:
                os.rename(dest, trash)
            except OSError:
                pass  # another process moved or replaced it; re-check on retry
            shutil.rmtree(trash, ignore_errors=True)
    if not _is_complete(dest):
        raise RuntimeError(f"could not move {tmp} into place at {dest}")


def _remove_stale_tmp_dirs(dest: Path) -> None:
    """Delete temp build folders abandoned by killed processes (older than an hour)."""
    cutoff = time.time() - _STALE_TMP_SECONDS
    for prefix in (f".{dest.name}.tmp-", f".{dest.name}.stale-"):
        for leftover in dest.parent.glob(prefix + "*"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)
            except OSError:
                pass



def main(argv: list[str] | None = None) -> int:
    """CLI: build (or find) every tiny model and print its folder; --self-check verifies them."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("names", nargs="*", help="models to build (default: all)")
    parser.add_argument("--cache-dir", default=None, help=f"cache root (default: ${CACHE_ENV_VAR} or ~/.cache/composer)")
    parser.add_argument("--self-check", action="store_true", help="check determinism and run each pipeline")
    args = parser.parse_args(argv)
    names = args.names or list(TINY_MODELS)
    for name in names:
        spec_for(name)
    if args.self_check:
        from composer.testing.tiny_selfcheck import self_check

        return 1 if self_check(names) else 0
    for name in names:
        print(f"{name}\t{tiny_model_path(name, args.cache_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
