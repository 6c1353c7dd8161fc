"""``pmc2 policy show|digest``: inspect policy documents and launch configurations.

``show`` parses a document (any of the four, chosen by its ``schema``) strictly and prints
its kind, digest and canonical TOML form; ``digest`` prints the digest alone, in hex (for a
launch configuration: the 32-byte HOST_DATA). ``--default NAME`` uses a shipped default
instead of a file; ``--bundle-digest alg:hex`` fills a launch-configuration template.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


def _load(args: argparse.Namespace) -> Any:
    from policies._defaults import default_text, parse_document
    from policies._errors import PolicyError
    from policies._launch import LaunchConfiguration

    if (args.file is None) == (args.default is None):
        raise PolicyError("give either FILE or --default NAME")
    if args.default is not None:
        text: str | bytes = default_text(args.default)
    else:
        try:
            with open(args.file, "rb") as handle:
                text = handle.read()
        except OSError as exc:
            raise PolicyError(f"cannot read {args.file}: {exc.strerror}") from None
    document = parse_document(text)
    if args.bundle_digest is not None:
        if not isinstance(document, LaunchConfiguration):
            raise PolicyError("--bundle-digest applies to a launch configuration only")
        document = document.with_bundle_digest(args.bundle_digest)
    return document


def _run(args: argparse.Namespace, show: bool) -> int:
    from policies._errors import PolicyError
    from policies._launch import LaunchConfiguration

    try:
        document = _load(args)
        template = isinstance(document, LaunchConfiguration) and document.is_template
        digest = None if template else document.digest_hex()
    except PolicyError as exc:
        print(f"pmc2 policy: {exc}", file=sys.stderr)
        return 1
    algorithm = document.DIGEST_ALGORITHM
    if not show:
        if digest is None:
            print(
                "pmc2 policy: a launch-configuration template has no digest; "
                "give --bundle-digest alg:hex",
                file=sys.stderr,
            )
            return 1
        print(digest)
        return 0
    if args.json:
        out = {"kind": document.KIND, "digest_algorithm": algorithm, "digest": digest}
        out["document"] = document.to_dict()
        print(json.dumps(out, indent=2))
        return 0
    print(f"# kind: {document.KIND}")
    if digest is None:
        print("# digest: none (template: model_bundle_digest not set)")
    else:
        label = " (HOST_DATA)" if isinstance(document, LaunchConfiguration) else ""
        print(f"# digest {algorithm}{label}: {digest}")
    print(document.to_toml(), end="")
    return 0


def _show(args: argparse.Namespace) -> int:
    return _run(args, show=True)


def _digest(args: argparse.Namespace) -> int:
    return _run(args, show=False)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", metavar="FILE", help="a policy TOML file")
    parser.add_argument(
        "--default",
        metavar="NAME",
        help="a shipped default: appraisal, key_release, egress or launch_config",
    )
    parser.add_argument(
        "--bundle-digest",
        metavar="ALG:HEX",
        help="fill a launch-configuration template's model_bundle_digest (e.g. sha256:...)",
    )


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add ``policy show`` and ``policy digest`` to the ``pmc2`` parser."""
    del bench
    policy_parser = sub.add_parser("policy", help="policy documents: show, digest")
    policy = policy_parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    show = policy.add_parser("show", help="parse a policy document and print its canonical form")
    _common(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(handler=_show)
    digest = policy.add_parser("digest", help="print a policy document's digest (hex)")
    _common(digest)
    digest.set_defaults(handler=_digest)
