"""Output shaping: each record's output from a list call made equal to what `pipeline(input)`
returns for that input alone, which is the model stage's promise (batching never changes
outputs). Two differences need undoing: the shape transformers gives a lone string's result
in some tasks, and the padding positions batched feature extraction returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class OutputShaper:
    """The single-call shape of a task's list-call outputs."""

    def __init__(self, task: str, call_params: dict[str, Any]) -> None:
        self.task = task
        # TextClassificationPipeline wraps a lone string's result in a list unless top_k is
        # passed at call time (transformers' "legacy" behaviour); list calls do not.
        self._wraps_lone_strings = task == "text-classification" and "top_k" not in call_params

    def as_single_calls(self, inputs: list[Any], outputs: list[Any], lengths: list[int | None], pipe: Any,
                        count_tokens: Callable[[Any, Any], int]) -> list[Any]:
        """A list call's outputs, each as the single-input call would have returned it. `lengths`:
        the inputs' token counts where they were tokenized ahead; `pipe`: the pipeline the call
        ran on, which `count_tokens(pipe, input)` measures the others with when needed."""
        if len(outputs) != len(inputs):
            raise RuntimeError(f"pipeline returned {len(outputs)} outputs for {len(inputs)} inputs")
        return [self._as_single_call(i, o, n, pipe, count_tokens) for i, o, n in zip(inputs, outputs, lengths)]

    def _as_single_call(self, model_input: Any, output: Any, length: int | None, pipe: Any,
                        count_tokens: Callable[[Any, Any], int]) -> Any:
        if self._wraps_lone_strings and isinstance(model_input, str):
            return [output]
        # Batched feature extraction returns hidden states for the padding positions too; a
        # record's embedding must not depend on its batch-mates, so cut it to its own tokens.
        if self.task == "feature-extraction":
            return self._unpadded(output, count_tokens(pipe, model_input) if length is None else length, pipe)
        return output

    @staticmethod
    def _unpadded(output: Any, length: int, pipe: Any) -> Any:
        """`output` cut to the input's own `length` tokens, on the side its tokenizer pads."""
        left = getattr(pipe.tokenizer, "padding_side", "right") == "left"
        return [tokens[len(tokens) - length:] if left else tokens[:length] for tokens in output]
