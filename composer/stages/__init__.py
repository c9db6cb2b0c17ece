"""Stage types by the names configs use (`type: template`), resolved lazily so that planning
imports only the light stage modules, never torch."""

from __future__ import annotations

import importlib

STAGE_TYPES: dict[str, str] = {
    # sources, selected by input.type
    "inline": "composer.stages.sources:InlineSource",
    "jsonl": "composer.stages.sources:JsonlSource",
    "csv": "composer.stages.sources:CsvSource",
    "parquet": "composer.stages.sources:ParquetSource",
    "dataset": "composer.stages.sources:DatasetSource",
    "folder": "composer.stages.sources:FolderSource",
    # text transforms
    "template": "composer.stages.text:Template",
    "normalize": "composer.stages.text:Normalize",
    # image transforms
    "load_image": "composer.stages.vision:LoadImage",
    "image_chat": "composer.stages.vision:ImageChat",
    # audio transforms
    "load_audio": "composer.stages.audio:LoadAudio",
    # the model
    "model": "composer.stages.model:PipelineStage",
    # post transforms
    "top_k": "composer.stages.post:TopK",
    "select": "composer.stages.post:Select",
    "rename": "composer.stages.post:Rename",
    "map_labels": "composer.stages.post:MapLabels",
    "threshold": "composer.stages.post:Threshold",
    # embeddings (feature-extraction output)
    "mean_pool": "composer.stages.embeddings:MeanPool",
    "embedding_classify": "composer.stages.embeddings:EmbeddingClassify",
    "semantic_search": "composer.stages.embeddings:SemanticSearch",
    "near_duplicates": "composer.stages.embeddings:NearDuplicates",
    # sinks
    "outputs": "composer.stages.sinks:OutputsSink",
}


def load_class(dotted: str) -> type:
    """Import `module:Class` or `module.Class`."""
    module, _, attr = dotted.partition(":") if ":" in dotted else dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)
