"""``pmc2 train`` and ``pmc2 bench`` subcommands (vision pipeline)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add the vision subcommands to the ``pmc2`` parser."""
    del sub, bench
