"""Subcommands of ``pmc2 snp`` (placeholder until implemented)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(snp: argparse._SubParsersAction[Any]) -> None:
    """Add this module's subcommands to ``pmc2 snp``."""
    del snp
