"""Argument checks shared by the modules: clear errors instead of bare asserts.

Used by every module that takes numbers from a caller (chapters 1-9).
"""

from __future__ import annotations

import math
import operator
from typing import Any


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is a positive ``int``; raise a message naming it otherwise."""
    # bool is a subclass of int, but ``heads=True`` is a bug, not a head count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def check_number(
    name: str, value: Any, low: float = 0.0, *, strict: bool = False, high: float = math.inf
) -> None:
    """Raise unless ``value`` is a finite number ``>= low`` (``> low`` if ``strict``) and ``< high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < low or (strict and value == low) or value >= high:
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise ValueError(
            f"{name} must be {bound}" + (f" and < {high:g}" if high < math.inf else "") + f", got {value!r}"
        )


def as_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is one (or has ``__index__``, as NumPy integers do), not a bool."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None
