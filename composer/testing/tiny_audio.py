"""Builders of the tiny speech and audio models (see tiny_models.py for why tiny models exist).

Each returns the model and the one object saved beside it (processor or feature extractor),
like tiny_text's and tiny_vision's builders. Everything is built offline: the CTC vocabulary is
the letters themselves, and Whisper's byte-level BPE is trained on the shipped corpus (as GPT-2's
is, by tiny_tokenizers), with Whisper's special and timestamp tokens added, so the real
pipelines (CTC and seq2seq, timestamps and chunking included) run on them.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

from composer.testing.tiny_specs import TinyModelSpec, label_maps, seeded_init
from composer.testing.tiny_tokenizers import byte_level_bpe, vocab_and_merges

_SAMPLING_RATE = 16_000
_CTC_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "|")  # "|" separates words (CTC word timestamps)
_WHISPER_BPE_VOCAB = 600
_WHISPER_EOT = "<|endoftext|>"
# The English-only Whisper special tokens, in Whisper's order, then one timestamp token every
# 0.02 s up to 30 s: the pipeline finds the timestamps as the ids after <|notimestamps|>.
_WHISPER_SPECIALS = (
    "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
    "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
)
_WHISPER_TIMESTAMPS = tuple(f"<|{i * 0.02:.2f}|>" for i in range(1501))
_WHISPER_MAX_TOKENS = 24  # random weights never stop on their own; keep generation short


def _wav2vec2_config(spec: TinyModelSpec, **extra: Any) -> Any:
    """wav2vec2-base's seven-layer feature encoder (320 samples a frame) with narrow layers."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, **extra,
    )


def _wav2vec2_features() -> Any:
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=_SAMPLING_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )


def wav2vec2_ctc(spec: TinyModelSpec) -> tuple[Any, list[Any]]:
    """wav2vec2 CTC speech recognizer over capital letters (the family of facebook/wav2vec2-base-960h)."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2Processor

    vocab = {token: index for index, token in enumerate((*_CTC_SPECIALS, *string.ascii_uppercase, "'"))}
    with tempfile.TemporaryDirectory() as scratch:  # the tokenizer reads its vocabulary from a file
        vocab_file = Path(scratch) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file))
    processor = Wav2Vec2Processor(feature_extractor=_wav2vec2_features(), tokenizer=tokenizer)
    config = _wav2vec2_config(spec, vocab_size=len(vocab), pad_token_id=vocab["<pad>"])
    return seeded_init(spec, config), [processor]


def wav2vec2_classifier(spec: TinyModelSpec) -> tuple[Any, list[Any]]:
    """wav2vec2 audio classifier with speech/music/noise labels (the family of superb/wav2vec2-base-superb-ks)."""
    config = _wav2vec2_config(spec, classifier_proj_size=16, **label_maps(spec.labels))
    return seeded_init(spec, config), [_wav2vec2_features()]


def _whisper_tokenizer() -> Any:
    """Byte-level BPE learnt from the corpus, as Whisper's tokenizer with its special tokens."""
    from transformers import WhisperTokenizer

    vocab, merges = vocab_and_merges(byte_level_bpe(_WHISPER_BPE_VOCAB, _WHISPER_EOT))
    # pad_token as openai/whisper-* set it: without one the pipeline refuses to batch.
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, model_max_length=448, pad_token=_WHISPER_EOT)
    tokenizer.add_special_tokens({"additional_special_tokens": list(_WHISPER_SPECIALS)})
    tokenizer.add_tokens(list(_WHISPER_TIMESTAMPS))
    return tokenizer


def whisper(spec: TinyModelSpec) -> tuple[Any, list[Any]]:
    """English-only Whisper (the family of openai/whisper-small): log-mel features, 30 s windows."""
    import transformers
    from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperProcessor

    tokenizer = _whisper_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (_WHISPER_EOT, *_WHISPER_SPECIALS)}
    eot, start = ids[_WHISPER_EOT], ids["<|startoftranscript|>"]
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80, sampling_rate=_SAMPLING_RATE), tokenizer=tokenizer)
    config = transformers.WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=spec.hidden_size, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=spec.num_heads, decoder_attention_heads=spec.num_heads,
        encoder_ffn_dim=spec.intermediate_size, decoder_ffn_dim=spec.intermediate_size,
        max_source_positions=1500, max_target_positions=64,  # 1500: a 30 s window after the stride-2 conv
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=start,
        begin_suppress_tokens=None, suppress_tokens=None,
    )
    model = seeded_init(spec, config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=False, max_length=_WHISPER_MAX_TOKENS,
        begin_suppress_tokens=[eot], max_initial_timestamp_index=50,
    )
    return model, [processor]


BUILDERS = {"wav2vec2-ctc": wav2vec2_ctc, "wav2vec2-classifier": wav2vec2_classifier, "whisper": whisper}
