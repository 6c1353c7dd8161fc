"""``pmc2 train`` subcommands; the vision benchmarks come from ``_bench_cli``."""

from __future__ import annotations

import argparse
from typing import Any

from vision import _bench_cli

__all__ = ["register"]


def register(
    sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]
) -> None:
    """Add the vision subcommands to the ``pmc2`` parser."""
    del sub
    _bench_cli.register(bench)
