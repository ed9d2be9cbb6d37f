"""Small helpers for the core's generator-shaped jobs (training, tiled prediction)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

R = TypeVar("R")


def run_to_end(gen: Generator[Any, Any, R]) -> R:
    """Iterate ``gen`` to its end, ignoring what it yields, and return its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as finished:
            return finished.value
