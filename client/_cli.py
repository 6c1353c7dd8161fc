"""``pmc2 classify``: attest the enclave, then classify images through the gateway.

    pmc2 classify IMAGE... [--gateway URL] [--attestation URL]
                  [--jwks-pin THUMBPRINT ... | --jwks-file JWKS.json | --insecure-unpinned-jwks]
                  [--expect-measurement HEX ...] [--expect-host-data HEX ...]
                  [--expect-launch-config TOML ...] [--expect-egress-digest HEX ...]
                  [--expect-egress-policy TOML ...] [--expect-appraisal-policy HEX ...]
                  [--expect-bundle-digest ALG:HEX ...] [--issuer ISS]
                  [--insecure-simulated-platform] [--fresh-nonce] [--suite HPKE-3|HPKE-9]
                  [--quality 90] [--max-side 512] [--top-k 3] [--api-key KEY]
                  [--timeout 30] [--no-sizes] [--json]

URLs default to ``$PMC2_GATEWAY_URL`` / ``$PMC2_ATTESTATION_URL``, else the loopback
ports of ``pmc2 up`` (8400, 8401); the pin to ``$PMC2_JWKS_PIN`` (comma-separated
thumbprints). Prints the verified attestation, then per image the label, the bytes sent
(JPEG and envelope: S1; the bit-string the enclave sent to the cloud: S2, unless
``--no-sizes``) and the latency breakdown (``--json``: one JSON document).

Exit status: 0 every image classified; 2 bad arguments or an unreadable image (nothing
sent); 3 attestation failed or policy mismatch (nothing sent); 4 a server refused
(problem document, or a sealed failure from the enclave); 5 transport failure (a server
unreachable or too slow); 6 protocol violation (a server answered garbage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx

from client._client import Client
from client._errors import (
    AttestationFailed,
    ClientError,
    InvalidImage,
    PolicyMismatch,
    ProtocolError,
    ServerRefused,
    TransportError,
)
from client._flow import ClientConfig
from client._images import DEFAULT_JPEG_QUALITY, DEFAULT_MAX_SIDE, JpegOptions
from client._results import Classification
from client._trust import Attestation, Expectations, JwksPin

__all__ = [
    "EXIT_OK",
    "EXIT_PROTOCOL",
    "EXIT_REFUSED",
    "EXIT_TRANSPORT",
    "EXIT_TRUST",
    "EXIT_USAGE",
    "register",
    "run_classify",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_TRUST = 3
EXIT_REFUSED = 4
EXIT_TRANSPORT = 5
EXIT_PROTOCOL = 6

DEFAULT_GATEWAY = "http://127.0.0.1:8400"
DEFAULT_ATTESTATION = "http://127.0.0.1:8401"


def register(sub: Any, bench: Any) -> None:
    """Add ``pmc2 classify`` to the ``pmc2`` parser (``bench`` is unused)."""
    p = sub.add_parser(
        "classify",
        help="attest the enclave, then classify images through the gateway",
        description="Verify the enclave's attestation against pinned attestation-service keys "
        "and your expectations; only then send each image (JPEG 4:4:4, sealed with HPKE) "
        "through the gateway, and print its label, bytes sent and latency breakdown. "
        "Exit status: 0 ok, 2 bad input, 3 attestation or policy failure, 4 refused, "
        "5 transport failure, 6 protocol violation.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any Pillow format)")
    p.add_argument("--gateway", default=os.environ.get("PMC2_GATEWAY_URL", DEFAULT_GATEWAY))
    p.add_argument(
        "--attestation",
        default=os.environ.get("PMC2_ATTESTATION_URL", DEFAULT_ATTESTATION),
        help="the attestation service (its key set and /v1/verify)",
    )
    p.add_argument(
        "--jwks-url", help="the service's key set (default: ATTESTATION/.well-known/jwks.json)"
    )
    pin = p.add_mutually_exclusive_group()
    pin.add_argument(
        "--jwks-pin",
        action="append",
        metavar="THUMBPRINT",
        help="an accepted token-signing key: its RFC 7638 thumbprint (the JWKS kid); repeatable",
    )
    pin.add_argument("--jwks-file", type=Path, help="a pinned JWKS file (nothing is fetched)")
    pin.add_argument(
        "--insecure-unpinned-jwks",
        action="store_true",
        help="trust any key served at the key-set URL (development only)",
    )
    hexes = {"action": "append", "metavar": "HEX"}
    p.add_argument("--expect-measurement", **hexes, help="an accepted launch measurement")
    p.add_argument("--expect-host-data", **hexes, help="an accepted HOST_DATA")
    p.add_argument(
        "--expect-launch-config",
        action="append",
        type=Path,
        metavar="TOML",
        help="an accepted launch configuration (its digest is HOST_DATA)",
    )
    p.add_argument("--expect-egress-digest", **hexes, help="an accepted egress-policy digest")
    p.add_argument(
        "--expect-egress-policy",
        action="append",
        type=Path,
        metavar="TOML",
        help="an accepted egress policy document (its digest is compared)",
    )
    p.add_argument("--expect-appraisal-policy", **hexes, help="an accepted appraisal digest")
    p.add_argument("--expect-bundle-digest", action="append", metavar="ALG:HEX")
    p.add_argument("--issuer", help="the expected token issuer")
    p.add_argument(
        "--insecure-simulated-platform",
        action="store_true",
        help="accept tokens for the simulated platform (status warning; development only)",
    )
    p.add_argument(
        "--fresh-nonce",
        action="store_true",
        help="have the attestation service verify evidence for this client's own nonce",
    )
    p.add_argument("--suite", choices=["HPKE-3", "HPKE-9"], default="HPKE-3")
    p.add_argument("--quality", type=int, default=DEFAULT_JPEG_QUALITY, help="JPEG quality")
    p.add_argument(
        "--max-side",
        type=int,
        default=DEFAULT_MAX_SIDE,
        help="downscale larger images to this many pixels (0: never)",
    )
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--api-key", default=os.environ.get("PMC2_API_KEY"))
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP call")
    p.add_argument(
        "--no-sizes",
        action="store_true",
        help="do not ask the enclave for the bit-string sizes it sent to the cloud "
        "(needed only for enclaves that predate them: they refuse the option)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(handler=_classify)


def _classify(args: argparse.Namespace) -> int:
    return run_classify(args)


def _usage(message: str) -> int:
    print(f"pmc2 classify: {message}", file=sys.stderr)
    return EXIT_USAGE


def _config(args: argparse.Namespace) -> ClientConfig:
    """The client configuration of the arguments (ValueError / OSError: bad input)."""
    from policies import EgressPolicy, LaunchConfiguration, PolicyError
    from sealed import SUPPORTED_SUITES

    if args.jwks_file is not None:
        pin = JwksPin(key_set=json.loads(Path(args.jwks_file).read_text()))
    elif args.insecure_unpinned_jwks:
        pin = JwksPin.insecure_any()
    else:
        prints = list(args.jwks_pin or [])
        if not prints:
            prints = [p for p in os.environ.get("PMC2_JWKS_PIN", "").split(",") if p.strip()]
        if not prints:
            raise ValueError(
                "pin the attestation service's keys: --jwks-pin THUMBPRINT (or $PMC2_JWKS_PIN), "
                "--jwks-file JWKS.json, or --insecure-unpinned-jwks for development"
            )
        pin = JwksPin(thumbprints=[p.strip() for p in prints])
    try:
        egress = list(args.expect_egress_digest or [])
        egress += [EgressPolicy.from_file(p).digest() for p in args.expect_egress_policy or []]
        host_data = list(args.expect_host_data or [])
        host_data += [
            LaunchConfiguration.from_file(p).host_data() for p in args.expect_launch_config or []
        ]
    except PolicyError as exc:
        raise ValueError(str(exc)) from None
    expect = Expectations(
        measurements=args.expect_measurement,
        launch_config_digests=host_data or None,
        egress_policy_digests=egress or None,
        model_bundle_digests=args.expect_bundle_digest,
        appraisal_policy_digests=args.expect_appraisal_policy,
        issuer=args.issuer,
        allow_insecure_simulated_platform=args.insecure_simulated_platform,
    )
    suite = next(s for s in SUPPORTED_SUITES if s.name == args.suite)
    return ClientConfig(
        gateway_url=args.gateway,
        attestation_url=args.attestation,
        jwks_pin=pin,
        jwks_url=args.jwks_url,
        expect=expect,
        suite=suite,
        jpeg=JpegOptions(quality=args.quality, max_side=args.max_side or None),
        top_k=args.top_k,
        fresh_nonce=args.fresh_nonce,
        api_key=args.api_key,
        timeout_s=args.timeout,
        sizes=not args.no_sizes,
    )


def _exit_code(error: ClientError) -> int:
    if isinstance(error, AttestationFailed | PolicyMismatch):
        return EXIT_TRUST
    if isinstance(error, ServerRefused):
        return EXIT_REFUSED
    if isinstance(error, TransportError):
        return EXIT_TRANSPORT
    if isinstance(error, ProtocolError):
        return EXIT_PROTOCOL
    return EXIT_USAGE  # InvalidImage


_KINDS = {
    EXIT_TRUST: "attestation refused",
    EXIT_REFUSED: "refused",
    EXIT_TRANSPORT: "transport failure",
    EXIT_PROTOCOL: "protocol violation",
    EXIT_USAGE: "bad input",
}


_STAGES = ("open", "decode", "queue", "perturb", "encode", "cloud")
"""The enclave's stages in pipeline order (the paper's Figure 4); others follow by name."""


def _short(data: bytes | None, n: int = 16) -> str:
    return "-" if data is None else data.hex()[:n] + "…"


def _print_attestation(attestation: Attestation) -> None:
    root = "AMD root" if attestation.amd_root else "NOT an AMD root: development only"
    print(
        f"attested  enclave key {attestation.key_id} ({attestation.suite.name}), "
        f"status {attestation.status} ({root})"
    )
    print(
        f"          measurement {_short(attestation.measurement)}  HOST_DATA "
        f"{_short(attestation.host_data)}  egress policy "
        f"{_short(attestation.egress_policy_digest)}"
    )
    mode = "fresh nonce (verified for this client)" if attestation.fresh else "published token"
    print(f"          {mode}, valid until {attestation.expires_at.isoformat()}")


def _decimal(value: float | None) -> str:
    """At most two decimals, none when whole: ``8.16``, ``9.5``, ``31``."""
    return "-" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


def _print_result(result: Classification) -> None:
    name = f"{result.label_name} " if result.label_name else ""
    sent = result.bytes_sent
    origin = "re-encoded" if sent.reencoded else "as given"
    print(
        f"{result.source}: {name}(label {result.label}, {result.score * 100:.1f} %)  "
        f"sent JPEG {sent.jpeg} B ({origin}, {result.size[0]}x{result.size[1]}) "
        f"in a {sent.envelope} B envelope"
    )
    if sent.bitstring_batch is not None and sent.batch_images is not None:
        n = sent.batch_images
        batch = f"{n} image{'s' if n != 1 else ''}"
        if sent.bitstring is not None:
            print(
                f"  to the cloud: bit-string {sent.bitstring} B (its own string; "
                f"{sent.bitstring_batch} B for a batch of {batch})"
            )
        else:
            print(
                f"  to the cloud: bit-string {_decimal(sent.bitstring_per_image)} B per image "
                f"(one {sent.bitstring_batch} B stream for {batch})"
            )
    t = result.timings
    stages = sorted(
        (k for k in t.server_ms if k != "total"),
        key=lambda k: (_STAGES.index(k) if k in _STAGES else len(_STAGES), k),
    )
    server = ", ".join(f"{k} {t.server_ms[k]:.2f}" for k in stages)
    reattest = f", re-attest {t.reattest_ms:.2f}" if t.reattest_ms else ""
    print(
        f"  latency {t.total_ms:.2f} ms: jpeg {t.jpeg_ms:.2f}, seal {t.seal_ms:.2f}, "
        f"round trip {t.round_trip_ms:.2f} (enclave: {server}), open {t.open_ms:.2f}{reattest}"
    )


def run_classify(args: argparse.Namespace, *, transport: httpx.BaseTransport | None = None) -> int:
    """Run ``pmc2 classify`` with parsed ``args``; ``transport`` replaces the network."""
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        return _usage(f"no such image file: {', '.join(missing)}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = _config(args)
    except (ValueError, OSError) as exc:
        return _usage(str(exc))
    for warning in caught:
        print(f"pmc2 classify: warning: {warning.message}", file=sys.stderr)
    results: list[Classification] = []
    attestation: Attestation | None = None
    code = EXIT_OK
    with Client(config, transport=transport) as client:
        try:
            attestation = client.attest()
            if not args.json:
                _print_attestation(attestation)
            for image in args.images:
                result = client.classify_one(image)
                results.append(result)
                if not args.json:
                    _print_result(result)
        except ClientError as exc:
            code = _exit_code(exc)
            print(f"pmc2 classify: {_KINDS[code]}: {exc}", file=sys.stderr)
            if isinstance(exc, InvalidImage):
                code = EXIT_USAGE
    if args.json:
        doc: dict[str, Any] = {
            "attestation": None if attestation is None else attestation.summary(),
            "results": [r.to_dict() for r in results],
            "exit_status": code,
        }
        print(json.dumps(doc, indent=2))
    return code
