"""Enumerations and JSON helpers shared by the statistics modules."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

import numpy as np


class _CaseInsensitiveEnum(enum.StrEnum):
    """A string enum that also accepts its values in any case, with ``-``/``_`` ignored."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            wanted = value.replace("-", "").replace("_", "").lower()
            for member in cls:
                if member.value.replace("-", "").replace("_", "").lower() == wanted:
                    return member
        return None


class MetricType(_CaseInsensitiveEnum):
    """What kind of outcome a metric records."""

    PROPORTION = "Proportion"
    MEAN = "Mean"


class Direction(_CaseInsensitiveEnum):
    """Which way a metric improves."""

    INCREASE = "Increase"
    DECREASE = "Decrease"


class Method(_CaseInsensitiveEnum):
    """How a rollout looks at its data."""

    SEQUENTIAL = "Sequential"
    FIXED_HORIZON = "FixedHorizon"
    GROUP_SEQUENTIAL = "GroupSequential"


class Verdict(_CaseInsensitiveEnum):
    """The outcome of one analysis tick for one challenger."""

    WIN = "Win"
    LOSS = "Loss"
    INCONCLUSIVE = "Inconclusive"
    FUTILE = "Futile"


class Alternative(_CaseInsensitiveEnum):
    """The alternative hypothesis about ``treatment - control``."""

    TWO_SIDED = "two-sided"
    LARGER = "larger"
    SMALLER = "smaller"


class Spending(_CaseInsensitiveEnum):
    """Lan-DeMets alpha-spending function shapes."""

    OBRIEN_FLEMING = "OBrienFleming"
    POCOCK = "Pocock"


def alternative_for(direction: Direction, sides: int) -> Alternative:
    """The alternative hypothesis a metric's direction implies.

    Args:
        direction: which way the metric improves.
        sides: 2 for a two-sided test, 1 for a one-sided test towards improvement.
    """
    if sides == 2:
        return Alternative.TWO_SIDED
    return Alternative.LARGER if Direction(direction) is Direction.INCREASE else Alternative.SMALLER


def json_value(value: Any) -> Any:
    """Turn a result field into plain JSON: numpy scalars to Python, NaN/inf to None, enums to strings."""
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: json_value(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_value(item) for item in value]
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


class JsonResult:
    """Mixin for frozen result dataclasses: ``to_dict()`` gives plain JSON-friendly values."""

    def to_dict(self) -> dict[str, Any]:
        """The result as a dict of plain floats, ints, strings, lists and None (NaN and inf become None)."""
        converted = json_value(self)
        assert isinstance(converted, dict)
        return converted


@dataclasses.dataclass(frozen=True, kw_only=True)
class EffectEstimate(JsonResult):
    """The numbers every treatment-versus-control result carries, whatever the test.

    ``absolute_difference`` is ``treatment - control`` and ``relative_lift`` is ``treatment / control - 1``;
    ``ci_*`` bound the absolute difference and ``relative_ci_*`` the lift. ``error`` is set, and the
    numbers are NaN where they cannot be computed, when the input cannot support a test.
    """

    metric: MetricType
    alpha: float
    n_control: float
    n_treatment: float
    control_value: float
    treatment_value: float
    absolute_difference: float
    relative_lift: float
    ci_low: float
    ci_high: float
    relative_ci_low: float
    relative_ci_high: float
    statistic: float
    p_value: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the result could be computed."""
        return self.error is None


def finite_or_nan(value: float) -> float:
    """``value`` as a float, NaN if it is not finite."""
    number = float(value)
    return number if math.isfinite(number) else math.nan


def format_number(value: float | None, spec: str = ".4g", missing: str = "n/a") -> str:
    """A number for a human message: ``spec`` formatting, ``missing`` for None, NaN and infinities."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)
