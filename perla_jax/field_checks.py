"""Checks of one setting's value, each a ValueError that names the setting, its value and what is allowed
(``Config`` runs them before anything compiles)."""

from __future__ import annotations

import math
from typing import Any, Mapping

# Counters and sizes reach XLA as int32 (jax's default without x64), so larger ints overflow or wrap there.
MAX_INT = 2**31 - 1
# jax.random.PRNGKey keeps the low 32 bits of a seed without x64: 2**32 would be seed 0 again.
MAX_SEED = 2**32 - 1
FLOAT32_MAX = 3.4028234663852886e38  # a larger number becomes inf in the compiled program


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is invalid: allowed are {', '.join(allowed)}")


def check_str(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name}={value!r} is invalid: allowed is a string")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is invalid: allowed are True, False")


def as_sizes(name: str, value: Any) -> tuple[int, ...]:
    sizes = tuple(value) if isinstance(value, (tuple, list)) else None
    if not sizes or not all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_INT for h in sizes):
        raise ValueError(
            f"{name}={value!r} is invalid: allowed is a non-empty tuple of positive ints (each <= {MAX_INT})"
        )
    return sizes


def as_kwargs(name: str, value: Any) -> dict[str, Any]:
    # Keyword arguments: jaxmarl receives them as **kwargs, which takes only identifier strings as names.
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k.isidentifier() for k in value):
        raise ValueError(
            f"{name}={value!r} is invalid: allowed is a mapping of keyword names (str) to values, "
            "e.g. {'max_steps': 50}"
        )
    return dict(value)


def as_int(name: str, value: Any) -> int:
    # 1e7 from a CLI or JSON is a float; accept it only when it is a whole number.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is invalid: allowed is a whole number")
    return value


def check_int_at_least(name: str, value: Any, low: int, high: int = MAX_INT) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} is invalid: allowed is an integer >= {low}")
    if value > high:
        raise ValueError(f"{name}={value!r} is invalid: allowed is an integer >= {low} and <= {high}")


def check_range(name: str, value: Any, low: float, high: float, low_open: bool = False) -> None:
    # Python ints compare with floats exactly, however large (math.isfinite(10**400) would raise OverflowError).
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value)
    )
    if ok:
        ok = (value > low if low_open else value >= low) and value <= min(high, FLOAT32_MAX)
    if not ok:
        bracket = "(" if low_open else "["
        hi = f"inf) that float32 holds (<= {FLOAT32_MAX:.7g})" if high == math.inf else f"{high}]"
        raise ValueError(f"{name}={value!r} is invalid: allowed is a number in {bracket}{low}, {hi}")
