"""The search space of composer's Optuna sweeper: Hydra override strings -> Optuna distributions.

The forms and types of Hydra's Optuna sweeper (hydra-optuna-sweeper 1.3):
- `choice(a,b,...)`, or `a,b,...`: categorical over the choices as Hydra parses them (1 an int,
  0.5 a float, true a bool, anything else a string; a list or dict choice is kept as its override
  text);
- `range(start,stop[,step])`: ints when start, stop and step are ints, else floats on the step's
  grid; `stop` is included, as in Hydra's Optuna sweeper (unlike the basic sweeper's range).
  `shuffle(range(...))`: categorical over the range's values;
- `interval(low,high)`: floats, uniform (Hydra's parser makes interval bounds floats);
  `tag(log, interval(low,high))`: floats, log-uniform;
- any other value: fixed, passed to every trial as it is written (and kept as the trial's user
  attribute, as Hydra's sweeper does).
Only what it imports is this package's and Hydra's; Optuna is imported when a sweep needs it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer

_PLAIN = re.compile(r"[\w\-./:@+]+")


@dataclass
class SearchSpace:
    """What each trial gets: sampled params (`distributions`, in the order they were given) and
    `fixed` overrides (key -> the override as written). `choice_texts` holds, for a categorical
    param, each choice's text in an override (aligned with the distribution's choices)."""

    distributions: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    choice_texts: dict[str, list[str]] = field(default_factory=dict)

    def value_text(self, name: str, value: Any) -> str:
        """`value` of param `name` as Hydra reads it back in an override."""
        if name in self.choice_texts:
            return self.choice_texts[name][self.distributions[name].to_internal_repr(value)]
        return override_text(value)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's overrides: its sampled `params` (the search space's in their order, then any
        a custom search space added), then the fixed ones."""
        names = [n for n in self.distributions if n in params] + [n for n in params if n not in self.distributions]
        return [f"{name}={self.value_text(name, params[name])}" for name in names] + list(self.fixed.values())

    def grid(self) -> dict[str, list[Any]]:
        """Every param's values, for optuna.samplers.GridSampler: a choice's choices, a range's
        values (its stop included, as the other samplers draw it); an interval has none."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        grid: dict[str, list[Any]] = {}
        for name, distribution in self.distributions.items():
            if isinstance(distribution, CategoricalDistribution):
                grid[name] = list(distribution.choices)
            elif isinstance(distribution, IntDistribution) and not distribution.log:
                grid[name] = list(range(distribution.low, distribution.high + 1, distribution.step))
            elif isinstance(distribution, FloatDistribution) and distribution.step is not None:
                low, step = Decimal(repr(distribution.low)), Decimal(repr(distribution.step))
                count = int((Decimal(repr(distribution.high)) - low) / step)
                grid[name] = [float(low + i * step) for i in range(count + 1)]  # 0.6, not 0.6000000000000001
            else:
                raise ValueError(f"hydra.sweeper.params.{name}: the grid sampler takes choice(...) and range(...), "
                                 f"not a continuous interval ({distribution})")
        return grid


def override_text(value: Any) -> str:
    """A Python value as Hydra reads it back as an override value: null, true/false, numbers as
    Python writes them, strings quoted when Hydra would read them otherwise."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and _parsed(text) == text:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _parsed(text: str) -> Any:
    try:
        return OverridesParser.create().parse_override(f"k={text}").value()
    except Exception:  # noqa: BLE001 - not a value Hydra reads as written: quote it
        return None


def _choice_text(value: Any) -> tuple[Any, str]:
    """A parsed choice as (what Optuna keeps, its override text): a list or dict choice is kept
    as its text, Optuna's categorical choices being None, bool, int, float or str."""
    if isinstance(value, (list, dict)):
        text = Transformer.encode(value)
        return text, text
    return value, override_text(value)


def _choices(override: Override) -> list[Any] | None:
    """The values of a choice sweep (or of shuffle(range(...))), in the order written (a
    shuffle would make the study differ from run to run); None for another override."""
    value = override.value()
    if not (isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle)):
        return None
    value.shuffle = False  # this parse's own object
    return list(override.sweep_iterator())


def distribution(override: Override) -> Any:
    """The Optuna distribution of an override (None: a fixed value)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    choices = _choices(override)
    if choices is not None:
        return CategoricalDistribution([_choice_text(v)[0] for v in choices])
    value = override.value()
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(v, float) for v in (start, stop, step)):
            return FloatDistribution(float(start), float(stop), step=float(step))
        return IntDistribution(int(start), int(stop), step=int(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError(f"{override.input_line}: not a search space composer's Optuna sweeper takes for "
                     f"{override.get_key_element()} (choice, range, interval, tag(log, interval) or a fixed value)")


def params_overrides(params: Any) -> list[str]:
    """`hydra.sweeper.params` (key -> override value, from config files) as override strings."""
    if not params:
        return []
    from omegaconf import DictConfig, ListConfig, OmegaConf

    def text(value: Any) -> str:
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value)
        if value is None or isinstance(value, (bool, int, float)):
            return override_text(value)
        return str(value)

    return [f"{key}={text(value)}" for key, value in params.items()]


def search_space(arguments: list[str]) -> SearchSpace:
    """The search space of `arguments` (the sweeper's params, then the command's overrides; a key
    given twice takes the later value, in the first one's place). A fixed value for a key that
    is also swept fixes it."""
    space = SearchSpace()
    chosen: dict[str, Override] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        chosen[override.get_key_element()] = override
    for key, override in chosen.items():
        found = distribution(override)
        if found is None:
            space.fixed[key] = override.input_line
            continue
        space.distributions[key] = found
        if getattr(found, "choices", None) is not None:
            space.choice_texts[key] = [_choice_text(v)[1] for v in override.sweep_iterator()]
    return space
