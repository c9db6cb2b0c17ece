"""What each tiny model is, and the two rules every builder applies to a spec.

Why a module of its own: :data:`TINY_MODELS` is the one table that the cache (tiny_models),
the builders (tiny_text, tiny_vision, tiny_audio) and ``model.id=tiny:<name>`` (composer.runtime)
all read, so it sits below them all and imports nothing heavy.  The table is data; the code here
is the name lookup, the seeded initialisation that makes every build byte-identical, and the
``id2label``/``label2id`` maps of the classification heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TINY_MODELS", "TinyModelSpec", "label_maps", "seeded_init", "spec_for"]


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
    family: str  # a BUILDERS key of tiny_text ("bert", "gpt2"), tiny_vision or tiny_audio
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
_IMAGE = ("cat", "dog", "bird")
_AUDIO = ("speech", "music", "noise")

#: name -> spec of every tiny model that can be built.
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
            labels=_IMAGE,
            seed=8,
            description="ViT on 32x32 images with cat/dog/bird labels.",
        ),
        TinyModelSpec(
            name="object-detection",
            task="object-detection",
            family="yolos",
            architecture="YolosForObjectDetection",
            labels=_IMAGE,
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
            labels=_AUDIO,
            seed=14,
            description="wav2vec2 classifier with speech/music/noise labels, 16 kHz.",
        ),
    )
}


def spec_for(name: str) -> TinyModelSpec:
    """The spec of tiny model `name`; ``KeyError`` naming the known models if there is none."""
    try:
        return TINY_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(TINY_MODELS))
        raise KeyError(f"unknown tiny model {name!r}; known: {known}") from None


def seeded_init(spec: TinyModelSpec, config: Any) -> Any:
    """Instantiate ``transformers.<spec.architecture>`` from `config`, seeded with ``spec.seed``
    without disturbing the caller's RNG state, in float32 and eval mode."""
    import torch
    import transformers

    model_cls = getattr(transformers, spec.architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = model_cls(config)
    model = model.float()
    model.eval()
    return model


def label_maps(names: tuple[str, ...]) -> dict[str, Any]:
    """``id2label`` and ``label2id`` config keys for labels `names` in id order (none without labels)."""
    if not names:
        return {}
    return {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}
