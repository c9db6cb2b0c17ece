"""pipeline-composer: run Hugging Face pipelines over real data from a config, reproducibly.

Kept import-free on purpose: `composer --help` and `composer plan` must not import torch.
"""

__version__ = "0.1.0"
