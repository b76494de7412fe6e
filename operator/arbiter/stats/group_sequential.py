"""Group-sequential boundaries by Lan-DeMets alpha spending at arbitrary information fractions.

The standardised statistic at look k is ``Z_k = S_k / sqrt(t_k)`` where ``S`` is a Brownian motion in
information time ``t`` (``t = 1`` at the planned sample size) with drift ``theta``. Look k's boundary
``c_k`` is chosen so that the probability of first crossing at look k under the null equals the alpha
newly spent, ``alpha(t_k) - alpha(t_{k-1})``. The crossing probabilities come from the recursive
numerical integration of Armitage, McPherson and Rowe (1969), as in Jennison and Turnbull (2000,
chapter 19): the sub-density of ``S_k`` on the continuation region is carried from look to look on a
grid with Simpson weights and convolved with the normal increment.

Spending functions (per side, for a one-sided level ``a``):
    O'Brien-Fleming type: ``alpha(t) = 2 - 2 Phi(z_{1 - a/2} / sqrt(t))``
    Pocock type:          ``alpha(t) = a log(1 + (e - 1) t)``
A two-sided design at level ``alpha`` uses symmetric boundaries, each side spending ``alpha / 2``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import optimize
from scipy import stats as sps

from arbiter.stats._types import JsonResult, Spending

FloatArray = npt.NDArray[np.float64]

# Grid resolution: points per standard deviation of the narrowest normal kernel, and how many standard
# deviations either side of the mean the grid spans where no boundary truncates it.
_POINTS_PER_SD = 6.0
_SPAN_SD = 9.0
_NEGLIGIBLE = 1e-15


def spent_alpha(
    information_fraction: npt.ArrayLike, alpha: float, spending: Spending | str = Spending.OBRIEN_FLEMING
) -> FloatArray:
    """Cumulative alpha spent by information fraction ``t`` (clipped to [0, 1]) for one-sided level ``alpha``."""
    spending = Spending(spending)
    t = np.clip(np.asarray(information_fraction, dtype=np.float64), 0.0, 1.0)
    if spending is Spending.POCOCK:
        pocock: FloatArray = alpha * np.log1p((math.e - 1.0) * t)
        return pocock
    with np.errstate(divide="ignore"):
        scaled = float(sps.norm.isf(alpha / 2.0)) / np.sqrt(t)
    obf: FloatArray = 2.0 * sps.norm.sf(scaled)
    return obf


def _simpson(low: float, high: float, spacing: float) -> tuple[FloatArray, FloatArray]:
    count = max(3, math.ceil((high - low) / spacing) + 1)
    count += 1 - count % 2  # Simpson's rule needs an odd number of points
    points = np.linspace(low, high, count)
    step = (high - low) / (count - 1)
    weights = np.full(count, 2.0)
    weights[1::2] = 4.0
    weights[0] = weights[-1] = 1.0
    return points, weights * step / 3.0


class _Recursion:
    """Carries the sub-density of ``S_k`` on the continuation region from look to look."""

    def __init__(self, drift: float) -> None:
        self.drift = drift
        self.time = 0.0
        self.points: FloatArray = np.zeros(1)
        self.mass: FloatArray = np.ones(1)  # weight * density at each point; a point mass at S_0 = 0

    def crossing(self, time: float, upper_z: float, lower_z: float) -> tuple[float, float]:
        """P(continue until now, then cross above ``upper_z`` / below ``lower_z`` at ``time``)."""
        delta = time - self.time
        scale = math.sqrt(delta)
        centre = self.points + self.drift * delta
        root_t = math.sqrt(time)
        up = 0.0
        down = 0.0
        if math.isfinite(upper_z):
            up = float(np.dot(self.mass, sps.norm.sf((upper_z * root_t - centre) / scale)))
        if math.isfinite(lower_z):
            down = float(np.dot(self.mass, sps.norm.cdf((lower_z * root_t - centre) / scale)))
        return up, down

    def advance(self, time: float, upper_z: float, lower_z: float, spacing: float) -> None:
        """Move to ``time``, keeping only the paths that stayed between the boundaries."""
        delta = time - self.time
        scale = math.sqrt(delta)
        root_t = math.sqrt(time)
        mean = self.drift * time
        low = max(lower_z * root_t, mean - _SPAN_SD * root_t) if math.isfinite(lower_z) else None
        high = min(upper_z * root_t, mean + _SPAN_SD * root_t) if math.isfinite(upper_z) else None
        low = mean - _SPAN_SD * root_t if low is None else low
        high = mean + _SPAN_SD * root_t if high is None else high
        if high <= low:
            self.points, self.mass = np.zeros(1), np.zeros(1)
            self.time = time
            return
        points, weights = _simpson(low, high, spacing)
        kernel = sps.norm.pdf((points[:, None] - self.points[None, :] - self.drift * delta) / scale) / scale
        density = kernel @ self.mass
        self.points, self.mass = points, weights * density
        self.time = time


def _spacings(times: Sequence[float]) -> list[float]:
    """Grid spacing after each look: fine enough for the narrower of the kernels before and after it."""
    increments = [b - a for a, b in zip([0.0, *times[:-1]], times, strict=True)]
    result = []
    for index, increment in enumerate(increments):
        following = increments[index + 1] if index + 1 < len(increments) else increment
        result.append(math.sqrt(min(increment, following)) / _POINTS_PER_SD)
    return result


def _check_times(times: Sequence[float]) -> str | None:
    if len(times) == 0:
        return "at least one look is needed"
    if any(not math.isfinite(t) or t <= 0 for t in times):
        return "information fractions must be positive"
    if any(b <= a for a, b in itertools.pairwise(times)):
        return "information fractions must increase from look to look"
    return None


def crossing_probabilities(
    information: Sequence[float],
    upper_z: Sequence[float],
    lower_z: Sequence[float] | None = None,
    drift: float = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """Probabilities of first crossing the upper (and lower) boundary at each look.

    Args:
        information: increasing information times of the looks (1 = planned sample size; may exceed 1).
        upper_z: upper boundaries on the Z scale (``inf`` for none).
        lower_z: lower boundaries on the Z scale (None or ``-inf`` for none).
        drift: the mean of ``Z`` at information 1 (0 under the null).

    Returns:
        ``(upper, lower)`` arrays of per-look first-crossing probabilities.
    """
    times = [float(t) for t in information]
    error = _check_times(times)
    if error:
        raise ValueError(error)
    lows = [-math.inf] * len(times) if lower_z is None else [float(z) for z in lower_z]
    recursion = _Recursion(drift)
    spacings = _spacings(times)
    ups: list[float] = []
    downs: list[float] = []
    for time, up_z, low_z, spacing in zip(times, upper_z, lows, spacings, strict=True):
        up, down = recursion.crossing(time, float(up_z), low_z)
        ups.append(up)
        downs.append(down)
        recursion.advance(time, float(up_z), low_z, spacing)
    return np.asarray(ups), np.asarray(downs)


@dataclass(frozen=True)
class GroupSequentialBoundaries(JsonResult):
    """Efficacy boundaries of a group-sequential design.

    Attributes:
        information_fractions: the looks so far (1 = planned sample size).
        z: the boundary on ``|Z|`` (two-sided) or ``Z`` towards the alternative (one-sided) at each look;
            ``inf`` where nothing was spent.
        cumulative_alpha: total alpha spent by each look (both sides together for two-sided designs).
        nominal_alpha: the p-value a fixed-horizon test would need to cross each look's boundary.
        error: why no boundaries could be computed.
    """

    information_fractions: tuple[float, ...]
    z: tuple[float, ...]
    cumulative_alpha: tuple[float, ...]
    nominal_alpha: tuple[float, ...]
    alpha: float
    sides: int
    spending: Spending
    error: str | None = None


def group_sequential_boundaries(
    information_fractions: Sequence[float],
    alpha: float = 0.05,
    sides: int = 2,
    spending: Spending | str = Spending.OBRIEN_FLEMING,
) -> GroupSequentialBoundaries:
    """Lan-DeMets boundaries for looks at the given information fractions.

    Fractions above 1 are treated as 1 (the final look spends what is left); a look whose fraction does
    not exceed the previous one is an error (it would spend nothing and test the same data).
    """
    spending = Spending(spending)
    fractions = tuple(float(t) for t in information_fractions)

    def failed(message: str) -> GroupSequentialBoundaries:
        return GroupSequentialBoundaries(fractions, (), (), (), alpha, sides, spending, message)

    if not (0.0 < alpha < 1.0):
        return failed(f"alpha must be between 0 and 1, got {alpha!r}")
    if sides not in (1, 2):
        return failed(f"sides must be 1 or 2, got {sides!r}")
    error = _check_times(fractions)
    if error:
        return failed(error)
    if any(t > 1.0 for t in fractions[:-1]):
        return failed("only the last look may reach information fraction 1")
    times = [min(t, 1.0) for t in fractions]
    if len(times) > 1 and times[-1] <= times[-2]:
        return failed("information fractions must increase from look to look")
    per_side = alpha / sides
    cumulative = spent_alpha(times, per_side, spending)
    if fractions[-1] >= 1.0:
        cumulative[-1] = per_side
    recursion = _Recursion(0.0)
    spacings = _spacings(times)
    boundaries: list[float] = []
    previous = 0.0
    for time, target_total, spacing in zip(times, cumulative, spacings, strict=True):
        target = float(target_total) - previous
        previous = float(target_total)
        if target <= _NEGLIGIBLE:
            bound = math.inf
        else:

            def excess(z: float, time: float = time, target: float = target) -> float:
                up, down = recursion.crossing(time, z, -z if sides == 2 else -math.inf)
                return (up + down) / sides - target

            bound = float(optimize.brentq(excess, -12.0, 40.0, xtol=1e-12, rtol=1e-12))
        boundaries.append(bound)
        recursion.advance(time, bound, -bound if sides == 2 else -math.inf, spacing)
    nominal = [float(sides * sps.norm.sf(z)) for z in boundaries]
    return GroupSequentialBoundaries(
        information_fractions=fractions,
        z=tuple(boundaries),
        cumulative_alpha=tuple(float(c) * sides for c in cumulative),
        nominal_alpha=tuple(nominal),
        alpha=alpha,
        sides=sides,
        spending=spending,
    )
