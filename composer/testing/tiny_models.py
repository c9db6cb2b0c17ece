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
functions that need them, so importing this module stays cheap.

Public API: :data:`TINY_MODELS`, :func:`tiny_model_path`; helpers:
:func:`default_cache_root`, :func:`build_tiny_model`, :func:`file_digests`.
Run ``python -m composer.testing.tiny_models`` to build every model (warms the
cache for the demo); add ``--self-check`` to also verify determinism and run a
real pipeline on each.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BUILDER_VERSION",
    "CACHE_ENV_VAR",
    "MANIFEST_NAME",
    "TINY_MODELS",
    "TinyModelSpec",
    "build_tiny_model",
    "default_cache_root",
    "file_digests",
    "tiny_model_path",
]

#: Bump whenever a change here alters the bytes of any built model: the version
#: is part of the cache folder name, so stale caches are never reused.
BUILDER_VERSION = 2

#: Environment variable naming the root of composer's cache.
CACHE_ENV_VAR = "COMPOSER_CACHE_DIR"

#: Written last into every model folder; its presence marks a complete build.
MANIFEST_NAME = "composer_tiny_model.json"

#: Shipped training text for the tokenizers (plain English, one sentence a line).
CORPUS_PATH = Path(__file__).with_name("corpus.txt")

# Tokenizer settings.  Vocabulary sizes stay under 1000 so the embedding
# matrices (the bulk of the weights at hidden size 32) stay tiny.  BERT's
# WordPiece vocab holds each learnt piece twice (``t`` and ``##t``), so ~900.
_BERT_BPE_PIECES = 450
_GPT2_VOCAB_SIZE = 800
_ASCII_ALPHABET = string.ascii_lowercase + string.digits + string.punctuation
_BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_GPT2_EOS = "<|endoftext|>"
_MAX_POSITIONS = 512

# Temp build folders older than this are assumed abandoned (killed process).
_STALE_TMP_SECONDS = 3600


@dataclass(frozen=True)
class TinyModelSpec:
    """How to build one tiny model.

    ``task`` is the ``transformers.pipeline`` task the model is meant for;
    ``architecture`` the ``transformers`` class instantiated;
    ``labels`` the ``id2label`` values in id order (classification heads);
    ``quant_skip_modules`` the module names to pass as
    ``BitsAndBytesConfig(llm_int8_skip_modules=...)`` so the task head stays in
    full precision (bitsandbytes' own default of skipping the output head only
    works for models it recognises).
    """

    name: str
    task: str
    family: str  # "bert" (WordPiece tokenizer), "gpt2" (byte-level BPE), or a tiny_vision/tiny_audio BUILDERS key
    architecture: str
    labels: tuple[str, ...] = ()
    quant_skip_modules: tuple[str, ...] = ()
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 64
    seed: int = 0
    description: str = ""
    extra_config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


_SENTIMENT = ("NEGATIVE", "POSITIVE")
_NER = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
_NLI = ("entailment", "neutral", "contradiction")

#: name -> spec of every tiny model :func:`tiny_model_path` can build.
TINY_MODELS: dict[str, TinyModelSpec] = {
    spec.name: spec
    for spec in (
        TinyModelSpec(
            name="text-classification",
            task="text-classification",
            family="bert",
            architecture="BertForSequenceClassification",
            labels=_SENTIMENT,
            quant_skip_modules=("classifier",),
            seed=1,
            description="Sentiment-style classifier with NEGATIVE/POSITIVE labels.",
        ),
        TinyModelSpec(
            name="token-classification",
            task="token-classification",
            family="bert",
            architecture="BertForTokenClassification",
            labels=_NER,
            quant_skip_modules=("classifier",),
            seed=2,
            description="NER-style tagger with O/B-PER/I-PER/B-LOC/I-LOC labels.",
        ),
        TinyModelSpec(
            name="zero-shot-classification",
            task="zero-shot-classification",
            family="bert",
            architecture="BertForSequenceClassification",
            labels=_NLI,
            quant_skip_modules=("classifier",),
            seed=3,
            description="NLI head; the zero-shot pipeline needs an 'entailment' label.",
        ),
        TinyModelSpec(
            name="fill-mask",
            task="fill-mask",
            family="bert",
            architecture="BertForMaskedLM",
            quant_skip_modules=("cls",),
            seed=4,
            description="Masked LM; inputs must contain the [MASK] token.",
        ),
        TinyModelSpec(
            name="feature-extraction",
            task="feature-extraction",
            family="bert",
            architecture="BertModel",
            seed=5,
            description="Bare encoder returning hidden states (hidden size 32).",
        ),
        TinyModelSpec(
            name="text-generation",
            task="text-generation",
            family="gpt2",
            architecture="GPT2LMHeadModel",
            quant_skip_modules=("lm_head",),
            seed=6,
            description="GPT-2 causal LM; pad/bos/eos are all <|endoftext|>.",
        ),
        TinyModelSpec(
            name="text-classification-quantizable",
            task="text-classification",
            family="bert",
            architecture="BertForSequenceClassification",
            labels=_SENTIMENT,
            quant_skip_modules=("classifier",),
            # On CPUs with AVX512-BF16, bitsandbytes repacks every 4-bit Linear
            # for its fused CPU kernel and then needs in_features % 64 == 0
            # (the 4-bit block size) and out_features % 32 == 0.  Hidden 32
            # fails there ("shape '[32, 0]' is invalid for input of size 16");
            # 64/128 pass.  The 2-way classifier (out 2) must be skipped
            # ("N must be divisible by block_n").  AVX2-only CPUs accept any
            # size.
            hidden_size=64,
            num_heads=2,
            intermediate_size=128,
            seed=7,
            description="Like text-classification, sized for bitsandbytes 4/8-bit.",
        ),
        TinyModelSpec(
            name="image-classification",
            task="image-classification",
            family="vit",
            architecture="ViTForImageClassification",
            seed=8,
            description="ViT on 32x32 images with cat/dog/bird labels.",
        ),
        TinyModelSpec(
            name="object-detection",
            task="object-detection",
            family="yolos",
            architecture="YolosForObjectDetection",
            seed=9,
            description="YOLOS (ViT with 5 detection tokens, no timm), cat/dog/bird labels.",
        ),
        TinyModelSpec(
            name="document-question-answering",
            task="document-question-answering",
            family="layoutlm",
            architecture="LayoutLMForQuestionAnswering",
            seed=10,
            description="LayoutLM (v1) extractive QA over OCR words and boxes.",
        ),
        TinyModelSpec(
            name="image-text-to-text",
            task="image-text-to-text",
            family="llava",
            architecture="LlavaForConditionalGeneration",
            seed=11,
            description="LLaVA (CLIP vision + Llama text); prompts put <image> where the image goes.",
        ),
        TinyModelSpec(
            name="automatic-speech-recognition",
            task="automatic-speech-recognition",
            family="wav2vec2-ctc",
            architecture="Wav2Vec2ForCTC",
            seed=12,
            description="wav2vec2 CTC over capital letters, 16 kHz, '|' between words.",
        ),
        TinyModelSpec(
            name="automatic-speech-recognition-whisper",
            task="automatic-speech-recognition",
            family="whisper",
            architecture="WhisperForConditionalGeneration",
            seed=13,
            description="English-only Whisper, 16 kHz log-mel, timestamp tokens; stops after 24 tokens.",
        ),
        TinyModelSpec(
            name="audio-classification",
            task="audio-classification",
            family="wav2vec2-classifier",
            architecture="Wav2Vec2ForSequenceClassification",
            seed=14,
            description="wav2vec2 classifier with speech/music/noise labels, 16 kHz.",
        ),
    )
}


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


def _spec(name: str) -> TinyModelSpec:
    try:
        return TINY_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(TINY_MODELS))
        raise KeyError(f"unknown tiny model {name!r}; known: {known}") from None


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
    _spec(name)
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


def file_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 of every file under `path`, keyed by POSIX relative path (sorted).

    Used for the manifest and to check that two builds are byte-identical.
    """
    root = Path(path)
    digests: dict[str, str] = {}
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digests[file.relative_to(root).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def _corpus_lines() -> list[str]:
    lines = CORPUS_PATH.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def build_tiny_model(name: str, dest: str | os.PathLike[str]) -> Path:
    """Build tiny model `name` directly into the (empty or new) folder `dest`.

    Not atomic: use :func:`tiny_model_path` unless you own `dest` (e.g. a
    determinism check building twice).  Writes config.json,
    model.safetensors, the tokenizer files, generation_config.json for
    generative models, and finally the manifest.
    """
    spec = _spec(name)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)

    import transformers
    from transformers.utils import logging as hf_logging

    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" noise
    try:
        if spec.family == "bert":
            tokenizer = _bert_tokenizer()
            model = _bert_model(spec, tokenizer)
        elif spec.family == "gpt2":
            tokenizer = _gpt2_tokenizer()
            model = _gpt2_model(spec, tokenizer)
        else:
            from composer.testing.tiny_audio import BUILDERS as AUDIO_BUILDERS
            from composer.testing.tiny_vision import BUILDERS

            # tokenizer, (image) processor or feature extractor
            model, (tokenizer,) = {**BUILDERS, **AUDIO_BUILDERS}[spec.family](spec)
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


# --------------------------------------------------------------------------- tokenizers


def _bert_tokenizer() -> Any:
    """WordPiece tokenizer learnt from the corpus, wrapped as the BERT fast tokenizer.

    ``tokenizers``' own ``WordPieceTrainer`` is *not* deterministic: it inserts
    the ``##x`` continuation characters in hash-map order, their ids break
    ties between equally frequent merges, and so the learnt vocabulary differs
    from run to run (15 runs gave 15 vocabularies).  Its plain ``BpeTrainer``
    without a continuation prefix is deterministic, so we learn sub-words with
    that (same BERT normaliser and pre-tokeniser) and turn each learnt piece
    ``t`` into the WordPiece entries ``t`` (word start) and ``##t`` (inside a
    word).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=_BERT_BPE_PIECES,
        min_frequency=1,
        special_tokens=list(_BERT_SPECIAL_TOKENS),
        # Every lower-case ASCII letter, digit and punctuation mark, so no
        # ordinary ASCII input turns into [UNK] (input is lower-cased first).
        initial_alphabet=list(_ASCII_ALPHABET),
        show_progress=False,
    )
    raw.train_from_iterator(_corpus_lines(), trainer=trainer)
    learnt = sorted(raw.get_vocab().items(), key=lambda kv: kv[1])
    vocab: dict[str, int] = {}
    for token in _BERT_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    for piece, _ in learnt:
        if piece in _BERT_SPECIAL_TOKENS:
            continue
        for entry in (piece, "##" + piece):
            vocab.setdefault(entry, len(vocab))

    from transformers import BertTokenizerFast

    common = dict(
        do_lower_case=True,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=_MAX_POSITIONS,
    )
    if _accepts(BertTokenizerFast, "vocab"):  # transformers >= 5: built from the vocab dict
        return BertTokenizerFast(vocab=vocab, **common)
    # transformers 4.x: build the same pipeline by hand and wrap it.
    from tokenizers import decoders, processors

    wordpiece = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece(prefix="##")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return BertTokenizerFast(tokenizer_object=wordpiece, **common)


def _gpt2_tokenizer() -> Any:
    """Byte-level BPE trained on the corpus, wrapped as the GPT-2 fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_GPT2_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[_GPT2_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(_corpus_lines(), trainer=trainer)

    from transformers import GPT2TokenizerFast

    # Left padding: batched generation with a decoder-only model must not put
    # pad tokens between the prompt and the generated continuation.
    common = dict(
        unk_token=_GPT2_EOS,
        bos_token=_GPT2_EOS,
        eos_token=_GPT2_EOS,
        pad_token=_GPT2_EOS,
        padding_side="left",
        model_max_length=_MAX_POSITIONS,
    )
    if _accepts(GPT2TokenizerFast, "merges"):  # transformers >= 5
        state = json.loads(raw.to_str())["model"]
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
        vocab = dict(sorted(state["vocab"].items(), key=lambda kv: kv[1]))
        return GPT2TokenizerFast(vocab=vocab, merges=merges, add_prefix_space=False, **common)
    return GPT2TokenizerFast(tokenizer_object=raw, **common)


def _accepts(cls: type, param: str) -> bool:
    import inspect

    return param in inspect.signature(cls.__init__).parameters


# --------------------------------------------------------------------------- models


def _seeded_init(spec: TinyModelSpec, model_cls: Any, config: Any) -> Any:
    """Instantiate with a fixed seed without disturbing the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = model_cls(config)
    model = model.float()
    model.eval()
    return model


def _labels_kwargs(spec: TinyModelSpec) -> dict[str, Any]:
    if not spec.labels:
        return {}
    id2label = dict(enumerate(spec.labels))
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def _bert_model(spec: TinyModelSpec, tokenizer: Any) -> Any:
    import transformers
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=_MAX_POSITIONS,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
        **_labels_kwargs(spec),
        **spec.extra_config,
    )
    return _seeded_init(spec, getattr(transformers, spec.architecture), config)


def _gpt2_model(spec: TinyModelSpec, tokenizer: Any) -> Any:
    import transformers
    from transformers import GenerationConfig, GPT2Config

    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=_MAX_POSITIONS,
        n_embd=spec.hidden_size,
        n_layer=spec.num_layers,
        n_head=spec.num_heads,
        n_inner=spec.intermediate_size,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        **spec.extra_config,
    )
    model = _seeded_init(spec, getattr(transformers, spec.architecture), config)
    # Explicit pad_token_id avoids generate()'s "Setting pad_token_id to
    # eos_token_id" warning and makes batched generation well defined.
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    return model


# --------------------------------------------------------------------------- self-check


def _self_check(names: list[str]) -> int:
    """Build each model twice (byte-identical?), then run its real pipeline."""
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
        _spec(name)
    if args.self_check:
        return 1 if _self_check(names) else 0
    for name in names:
        print(f"{name}\t{tiny_model_path(name, args.cache_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
