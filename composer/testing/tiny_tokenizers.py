"""The tiny models' tokenizers, trained offline on the shipped corpus (``corpus.txt``).

Why a module of its own: the text models (tiny_text), LayoutLM and LLaVA (tiny_vision) and
Whisper (tiny_audio) all need a tokenizer that splits ordinary English into real sub-words
rather than ``[UNK]``, and none can be downloaded.  Training them is one job, apart from
building models: a BERT WordPiece, a GPT-2 byte-level BPE, and the byte-level BPE training that
GPT-2 and Whisper share.  Vocabularies stay under 1000 so the embedding matrices (the bulk of
the weights at hidden size 32) stay tiny.
"""

from __future__ import annotations

import inspect
import json
import string
from pathlib import Path
from typing import Any

__all__ = ["MAX_POSITIONS", "bert_tokenizer", "byte_level_bpe", "corpus_lines", "gpt2_tokenizer", "vocab_and_merges"]

#: Shipped training text for the tokenizers (plain English, one sentence a line).
CORPUS_PATH = Path(__file__).with_name("corpus.txt")

#: Longest input of every tiny text model (position embeddings and ``model_max_length``).
MAX_POSITIONS = 512

# BERT's WordPiece vocab holds each learnt piece twice (``t`` and ``##t``), so ~900.
_BERT_BPE_PIECES = 450
_GPT2_VOCAB_SIZE = 800
_ASCII_ALPHABET = string.ascii_lowercase + string.digits + string.punctuation
_BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_GPT2_EOS = "<|endoftext|>"


def corpus_lines() -> list[str]:
    """The corpus's non-blank lines, stripped."""
    lines = CORPUS_PATH.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def bert_tokenizer() -> Any:
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
    raw.train_from_iterator(corpus_lines(), trainer=trainer)
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
        model_max_length=MAX_POSITIONS,
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


def byte_level_bpe(vocab_size: int, end_token: str) -> Any:
    """A ``tokenizers`` byte-level BPE (GPT-2's scheme) trained on the corpus, `end_token` its one special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[end_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(corpus_lines(), trainer=trainer)
    return raw


def vocab_and_merges(raw: Any) -> tuple[dict[str, int], list[tuple[str, ...]]]:
    """The vocabulary (in id order) and merges of a trained BPE, as ``transformers`` tokenizers take them."""
    state = json.loads(raw.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    vocab = dict(sorted(state["vocab"].items(), key=lambda kv: kv[1]))
    return vocab, merges


def gpt2_tokenizer() -> Any:
    """Byte-level BPE trained on the corpus, wrapped as the GPT-2 fast tokenizer."""
    raw = byte_level_bpe(_GPT2_VOCAB_SIZE, _GPT2_EOS)

    from transformers import GPT2TokenizerFast

    # Left padding: batched generation with a decoder-only model must not put
    # pad tokens between the prompt and the generated continuation.
    common = dict(
        unk_token=_GPT2_EOS,
        bos_token=_GPT2_EOS,
        eos_token=_GPT2_EOS,
        pad_token=_GPT2_EOS,
        padding_side="left",
        model_max_length=MAX_POSITIONS,
    )
    if _accepts(GPT2TokenizerFast, "merges"):  # transformers >= 5
        vocab, merges = vocab_and_merges(raw)
        return GPT2TokenizerFast(vocab=vocab, merges=merges, add_prefix_space=False, **common)
    return GPT2TokenizerFast(tokenizer_object=raw, **common)


def _accepts(cls: type, param: str) -> bool:
    return param in inspect.signature(cls.__init__).parameters
