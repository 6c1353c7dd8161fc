"""``pmc2 snp`` subcommands.

``verify`` and ``show`` live here; ``fetch`` (KDS) is contributed by ``_kds_cli`` and
``simulate`` / ``measure`` by ``_sim_cli``.
"""

from __future__ import annotations

import argparse
from typing import Any

from attestation import _kds_cli, _sim_cli

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add the ``snp`` subcommands to the ``pmc2`` parser."""
    del bench
    snp_parser = sub.add_parser("snp", help="SEV-SNP evidence: verify, show, fetch, simulate")
    snp = snp_parser.add_subparsers(dest="snp_command", metavar="SUBCOMMAND")
    _kds_cli.register(snp)
    _sim_cli.register(snp)
