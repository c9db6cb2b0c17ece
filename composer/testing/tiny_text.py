"""Builders of the tiny text models: BERT (encoder heads) and GPT-2 (causal LM).

Why a module of its own: like tiny_vision and tiny_audio, it turns a spec into a model plus the
objects saved beside it, here a BERT or GPT-2 architecture sized by the spec around a tokenizer
from tiny_tokenizers.  Every builder has the same signature, ``(spec) -> (model, [saved
objects])``, so tiny_build dispatches on ``spec.family`` through the three ``BUILDERS`` tables.
"""

from __future__ import annotations

from typing import Any

from composer.testing.tiny_specs import TinyModelSpec, label_maps, seeded_init
from composer.testing.tiny_tokenizers import MAX_POSITIONS, bert_tokenizer, gpt2_tokenizer


def bert(spec: TinyModelSpec) -> tuple[Any, list[Any]]:
    """A BERT encoder with the spec's head (classifier, tagger, masked LM or none), WordPiece tokenizer."""
    from transformers import BertConfig

    tokenizer = bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
        **label_maps(spec.labels),
        **spec.extra_config,
    )
    return seeded_init(spec, config), [tokenizer]


def gpt2(spec: TinyModelSpec) -> tuple[Any, list[Any]]:
    """A GPT-2 causal LM whose pad, bos and eos are all ``<|endoftext|>``, byte-level BPE tokenizer."""
    from transformers import GenerationConfig, GPT2Config

    tokenizer = gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=MAX_POSITIONS,
        n_embd=spec.hidden_size,
        n_layer=spec.num_layers,
        n_head=spec.num_heads,
        n_inner=spec.intermediate_size,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        **spec.extra_config,
    )
    model = seeded_init(spec, config)
    # Explicit pad_token_id avoids generate()'s "Setting pad_token_id to
    # eos_token_id" warning and makes batched generation well defined.
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    return model, [tokenizer]


BUILDERS = {"bert": bert, "gpt2": gpt2}
