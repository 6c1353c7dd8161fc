"""The ``pmc2`` command line.

Each capability package contributes its own subcommands through a ``register``
function in its private ``_cli`` module; this module only assembles them and maps
the outcome to an exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pmc2 import __version__

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _build_parser() -> argparse.ArgumentParser:
    from attestation._cli import register as register_snp
    from pmc2._demo import register as register_demo
    from policies._cli import register as register_policy
    from vision._cli import register as register_vision

    parser = argparse.ArgumentParser(
        prog="pmc2",
        description="PMC2: attested confidential-inference gateway with key release.",
    )
    parser.add_argument("--version", action="version", version=f"pmc2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_parser = sub.add_parser("bench", help="benchmarks (write JSON)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    register_snp(sub, bench)
    register_vision(sub, bench)
    register_policy(sub, bench)
    register_demo(sub, bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
