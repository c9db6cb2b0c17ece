"""Token states -> one sentence vector: the pooling sentence-transformers models are trained with.

One function serves both places that pool: the model stage, on each record's token states
while they are still the batch's tensors (when a pooling stage reads its output, the plan hands
it the pooling), and the `mean_pool` stage, on token states a record already carries. Both
compute in float64, so a vector does not depend on which of them pooled it.

A record's states hold exactly its own tokens (the model stage cuts batched outputs back to
each record's length, OutputShaper._unpadded), so the plain mean over them *is* the
attention-mask-weighted mean sentence-transformers computes over a padded batch.
"""

from __future__ import annotations

import math
from typing import Any

# sentence-transformers' Pooling modes (1_Pooling/config.json's pooling_mode_<mode>_tokens keys,
# cls_token for cls), one at a time.
POOLING_MODES = ("mean", "max", "cls", "mean_sqrt_len")
EXPECTED_STATES = "expected feature-extraction output shaped [1][tokens][hidden] or [tokens][hidden]"


def token_states(value: Any) -> Any:
    """The [tokens][hidden] float64 tensor of one record's feature-extraction output (a tensor,
    or the nested lists a run writes)."""
    import torch

    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        value = torch.stack(list(value))  # a batched call's output: one [tokens][hidden] tensor per input
    try:
        states = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:  # labels, ragged lists: another task's output
        raise ValueError(f"{EXPECTED_STATES}, got a value that is not a numeric array ({error})") from None
    while states.ndim > 2 and states.shape[0] == 1:
        states = states[0]
    if states.ndim != 2 or states.shape[0] == 0:
        raise ValueError(f"{EXPECTED_STATES}, got shape {list(states.shape)}")
    return states


def pool(value: Any, mode: str = "mean", normalize: bool = True) -> Any:
    """One record's sentence vector (a float64 tensor: records.to_jsonable makes it a list in one
    C call, where a list of floats would be walked float by float): its token states pooled by
    `mode`, then divided by its L2 norm (at least 1e-12, as torch.nn.functional.normalize does)
    when `normalize`."""
    states = token_states(value)
    if mode == "mean":
        vector = states.mean(dim=0)
    elif mode == "max":
        vector = states.max(dim=0).values
    elif mode == "cls":
        vector = states[0]
    elif mode == "mean_sqrt_len":
        vector = states.sum(dim=0) / math.sqrt(states.shape[0])
    else:
        raise ValueError(f"pooling mode must be one of {', '.join(POOLING_MODES)}, got {mode!r}")
    if normalize:
        vector = vector / max(float(vector.norm()), 1e-12)
    return vector


def check_mode(mode: Any) -> None:
    """Refuse an unknown pooling mode when the stage is built (plan time), not per record."""
    if mode not in POOLING_MODES:
        raise ValueError(f"mode must be one of {', '.join(POOLING_MODES)}, got {mode!r}")
