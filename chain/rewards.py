"""Reward amounts, exact to the base unit (docs/design.md §1, §3).

``R(d, d_c) = I_{1-d}(a, 1/2) - I_{1-d_c}(a, 1/2)`` with the regularised
incomplete beta function. For integer ``a`` and ``b = 1/2`` it has the closed form

    I_x(a, 1/2) = 1 - sqrt(1 - x) * sum_{j<a} binom(2j, j) (x/4)^j,

so with ``x = 1 - d``: ``R = sqrt(d_c) S(1 - d_c) - sqrt(d) S(1 - d)``. ``S`` is a
rational evaluated exactly; the two square roots are computed by ``decimal`` at
a fixed precision (correctly rounded, identical on every platform). At 80 digits
and a scale up to 10^30 the floor can only be off when the true value lies
within 10^-45 of an integer, which the tests bound against mpmath.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Context, Decimal
from fractions import Fraction
from math import comb
from typing import Final

PPB: Final[int] = 1_000_000_000
PRECISION: Final[int] = 80  # decimal digits
MAX_A: Final[int] = 64  # bounds the series length
MAX_SCALE: Final[int] = 10**30

_CTX: Final[Context] = Context(prec=PRECISION, rounding=ROUND_FLOOR)


def _series(x: Fraction, a: int) -> Fraction:
    """``sum_{j<a} binom(2j, j) (x/4)^j`` exactly."""
    total = Fraction(0)
    term = Fraction(1)
    quarter_x = x / 4
    for j in range(a):
        total += comb(2 * j, j) * term
        term *= quarter_x
    return total


def _sqrt_d_times_series(d_ppb: int, a: int) -> Decimal:
    """``sqrt(d) * S(1 - d)`` at PRECISION digits; equals ``1 - I_{1-d}(a, 1/2)``."""
    d = Fraction(d_ppb, PPB)
    s = _series(1 - d, a)
    # sqrt(d) * s = sqrt(d * s^2): one rounding of an exact rational.
    value = d * s * s
    return _CTX.sqrt(_CTX.divide(Decimal(value.numerator), Decimal(value.denominator)))


def _check(d_ppb: int, a: int) -> None:
    if not isinstance(d_ppb, int) or not 0 <= d_ppb <= PPB:
        raise ValueError(f"distance {d_ppb!r} ppb outside 0..{PPB}")
    if not isinstance(a, int) or not 1 <= a <= MAX_A:
        raise ValueError(f"reward parameter a={a!r} outside 1..{MAX_A}")


def incomplete_beta_half(x_ppb: int, a: int) -> Decimal:
    """``I_x(a, 1/2)`` for ``x = x_ppb / 10^9`` at PRECISION digits (for tests and display)."""
    _check(x_ppb, a)
    return _CTX.subtract(Decimal(1), _sqrt_d_times_series(PPB - x_ppb, a))


def improvement_reward(d_ppb: int, dc_ppb: int, a: int, scale: int) -> int:
    """``floor(scale * (I_{1-d}(a, 1/2) - I_{1-d_c}(a, 1/2)))`` base units; 0 if ``d >= d_c``."""
    _check(d_ppb, a)
    _check(dc_ppb, a)
    if not isinstance(scale, int) or not 0 <= scale <= MAX_SCALE:
        raise ValueError(f"reward scale {scale!r} outside 0..{MAX_SCALE}")
    if d_ppb >= dc_ppb or scale == 0:
        return 0
    diff = _CTX.subtract(_sqrt_d_times_series(dc_ppb, a), _sqrt_d_times_series(d_ppb, a))
    amount = _CTX.multiply(diff, Decimal(scale))
    return max(0, int(amount.to_integral_value(rounding=ROUND_FLOOR)))


def validator_reward(improver_reward: int, position: int) -> int:
    """``floor(improver_reward * 2^-position)``, position 1-based."""
    if position < 1:
        raise ValueError(f"vote position {position} must be >= 1")
    if improver_reward < 0:
        raise ValueError(f"improver reward {improver_reward} must be >= 0")
    return improver_reward >> position
