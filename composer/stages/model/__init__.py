"""The model stage as a package: the stage (stage.py) and its collaborators, one job each:
loading.py (the model found, loaded, pooled), batching.py (batch planning and batch_size=auto),
prepared.py (tokenizing ahead: transformers' private pipeline internals), preparer.py (a
window's preprocessing, checked against the pipeline's), outputs.py (single-call shapes).
Only the stage is exported: configs name it as `composer.stages.model:PipelineStage`."""

from composer.stages.model.stage import PipelineStage

__all__ = ["PipelineStage"]
