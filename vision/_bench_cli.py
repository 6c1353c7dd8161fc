"""``pmc2 bench bandwidth`` and ``pmc2 bench speed`` (placeholder until implemented)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(bench: argparse._SubParsersAction[Any]) -> None:
    """Add the vision benchmarks to ``pmc2 bench``."""
    del bench
