"""``pmc2 demo``: the main job on embedded defaults."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    del args
    print("PMC2 demo: nothing to show yet")
    return 0


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add ``demo`` to the ``pmc2`` parser."""
    del bench
    p = sub.add_parser("demo", help="run the main job on embedded defaults")
    p.set_defaults(handler=_run)
