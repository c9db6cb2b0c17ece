"""Builders of the tiny image and document models (see tiny_models.py for why tiny models exist).

Each returns the model and the objects saved beside it (image processor, tokenizer, processor).
Image processors are the PIL-backed classes: the default ones need torchvision, which does not
load beside the CPU torch this project uses, and transformers would fall back to these anyway.
Architectures avoid timm for the same reason (object detection is YOLOS, not DETR).
"""

from __future__ import annotations

from typing import Any

from composer.testing.tiny_specs import TinyModelSpec, label_maps, seeded_init
from composer.testing.tiny_tokenizers import MAX_POSITIONS, bert_tokenizer, gpt2_tokenizer

_IMAGE_SIZE = 32
_IMAGE_TOKEN = "<image>"
# A minimal chat template (role: content lines, images as <image>), enough for the
# image-text-to-text pipeline's chat input and for plain "<image> question" prompts.
_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def vit(spec: TinyModelSpec) -> tuple[Any, list[Any]]:
    """ViT image classifier on 32x32 images (the family of google/vit-base-patch16-224)."""
    import transformers

    config = transformers.ViTConfig(
        image_size=_IMAGE_SIZE, patch_size=8, hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, intermediate_size=spec.intermediate_size, **label_maps(spec.labels),
    )
    processor = transformers.ViTImageProcessorPil(size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE})
    return seeded_init(spec, config), [processor]


def yolos(spec: TinyModelSpec) -> tuple[Any, list[Any]]:
    """YOLOS object detector (a ViT with detection tokens, DETR's heads and post-processing), the
    family of hustvl/yolos-tiny: pure transformers, where DETR's ResNet backbone needs timm."""
    import transformers

    config = transformers.YolosConfig(
        image_size=[_IMAGE_SIZE, _IMAGE_SIZE], patch_size=8, hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, intermediate_size=spec.intermediate_size, num_detection_tokens=5,
        **label_maps(spec.labels),
    )
    processor = transformers.YolosImageProcessorPil(size={"shortest_edge": _IMAGE_SIZE, "longest_edge": 2 * _IMAGE_SIZE})
    return seeded_init(spec, config), [processor]


def layoutlm(spec: TinyModelSpec) -> tuple[Any, list[Any]]:
    """LayoutLM (v1) extractive document QA, the family of impira/layoutlm-document-qa.

    v1 reads words and boxes only (no pixels), so it needs no image processor: the pipeline
    gets words from Tesseract OCR or from the record's word boxes.
    """
    import transformers

    tokenizer = bert_tokenizer()
    config = transformers.LayoutLMConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, intermediate_size=spec.intermediate_size,
        max_position_embeddings=MAX_POSITIONS, pad_token_id=tokenizer.pad_token_id,
    )
    return seeded_init(spec, config), [tokenizer]


def llava(spec: TinyModelSpec) -> tuple[Any, list[Any]]:
    """LLaVA (CLIP vision tower + Llama decoder) for image-text-to-text, GPT-2 style tokenizer."""
    import transformers

    tokenizer = gpt2_tokenizer()
    tokenizer.add_tokens([_IMAGE_TOKEN], special_tokens=True)
    tokenizer.chat_template = _CHAT_TEMPLATE
    eos = tokenizer.eos_token_id
    vision = transformers.CLIPVisionConfig(
        hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, image_size=_IMAGE_SIZE, patch_size=8, projection_dim=spec.hidden_size,
    )
    text = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        max_position_embeddings=MAX_POSITIONS, pad_token_id=eos, bos_token_id=eos, eos_token_id=eos,
    )
    config = transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(_IMAGE_TOKEN),
        vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=(_IMAGE_SIZE // 8) ** 2,
    )
    model = seeded_init(spec, config)
    model.generation_config = transformers.GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    image_processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": _IMAGE_SIZE}, crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
    )
    processor = transformers.LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        chat_template=_CHAT_TEMPLATE, image_token=_IMAGE_TOKEN, num_additional_image_tokens=1,
    )
    return model, [processor]


BUILDERS = {"vit": vit, "yolos": yolos, "layoutlm": layoutlm, "llava": llava}
