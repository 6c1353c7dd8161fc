"""The ``pmc2`` command line.

Each capability package contributes its own subcommands through a ``register``
function in its private ``_cli`` module; this module only assembles them and maps
the outcome to an exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pmc2 import __version__

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]
Registrar = Callable[["argparse._SubParsersAction[Any]", "argparse._SubParsersAction[Any]"], None]


def _registrars() -> list[Registrar]:
    """Each package's ``register(sub, bench)``, in the order ``pmc2 --help`` lists them."""
    from attestation import _admin_cli, _cli
    from client import _cli as client_cli
    from cloud_infer import _cli as cloud_cli
    from enclave_app import _cli as enclave_cli
    from gateway import _cli as gateway_cli
    from pmc2 import _demo, _up
    from policies import _cli as policy_cli
    from vision import _cli as vision_cli

    return [
        _cli.register,
        _admin_cli.register,
        policy_cli.register,
        vision_cli.register,
        enclave_cli.register,
        cloud_cli.register,
        gateway_cli.register,
        client_cli.register,
        _demo.register,
        _up.register,
    ]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pmc2",
        description="PMC2: attested confidential-inference gateway with key release.",
    )
    parser.add_argument("--version", action="version", version=f"pmc2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench_parser = sub.add_parser("bench", help="benchmarks (write JSON)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    for register in _registrars():
        register(sub, bench)
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
