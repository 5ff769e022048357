"""Argument checks shared by the modules: clear errors instead of bare asserts."""

from __future__ import annotations

from typing import Any


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is a positive ``int``; raise a message naming it otherwise."""
    # bool is a subclass of int, but ``heads=True`` is a bug, not a head count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value
