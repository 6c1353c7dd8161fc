"""``pmc2 gateway serve``: run the gateway in front of enclave replicas.

Heavy imports (uvicorn) happen inside the handler.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PORT", "config_from_args", "register"]

DEFAULT_PORT = 8400


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add ``pmc2 gateway serve``."""
    gw = sub.add_parser("gateway", help="the untrusted front door (docs/gateway_api.md)")
    gsub = gw.add_subparsers(dest="gateway", metavar="ACTION")
    serve = gsub.add_parser("serve", help="serve /v1/attestation and /v1/infer")
    serve.add_argument(
        "--replica",
        action="append",
        required=True,
        metavar="URL",
        help="an enclave replica's internal base URL (repeat for several)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    serve.add_argument(
        "--rate", type=float, default=10.0, help="requests per second per client (10)"
    )
    serve.add_argument("--burst", type=int, default=20, help="token bucket size per client (20)")
    serve.add_argument(
        "--api-keys",
        type=Path,
        default=None,
        help="file of accepted API keys, one per line (enables per-key rate limits)",
    )
    serve.add_argument("--key-rate", type=float, default=None, help="requests/s per API key")
    serve.add_argument("--key-burst", type=int, default=None, help="bucket size per API key")
    serve.add_argument(
        "--max-in-flight", type=int, default=64, help="concurrent requests per replica (64)"
    )
    serve.add_argument("--timeout", type=float, default=30.0, help="replica timeout in s (30)")
    serve.add_argument(
        "--max-envelope-bytes", type=int, default=None, help="request envelope limit"
    )
    serve.add_argument(
        "--attestation-ttl", type=float, default=30.0, help="attestation cache TTL in s (30)"
    )
    serve.set_defaults(handler=_serve)


def _api_keys(path: Path | None) -> frozenset[bytes]:
    from gateway._config import api_key_digest

    if path is None:
        return frozenset()
    lines = path.read_text(encoding="ascii").splitlines()
    return frozenset(
        api_key_digest(line.strip()) for line in lines if line.strip() and not line.startswith("#")
    )


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`GatewayConfig` the arguments describe (raises ``ConfigError``)."""
    from gateway._config import GatewayConfig, RateLimit

    key_limit = None
    if args.key_rate is not None or args.key_burst is not None:
        key_limit = RateLimit(
            rate_per_s=args.key_rate if args.key_rate is not None else args.rate,
            burst=args.key_burst if args.key_burst is not None else args.burst,
        )
    extra: dict[str, Any] = {}
    if args.max_envelope_bytes is not None:
        extra["max_envelope_bytes"] = args.max_envelope_bytes
    return GatewayConfig(
        replicas=tuple(args.replica),
        rate_limit=RateLimit(rate_per_s=args.rate, burst=args.burst),
        api_keys=_api_keys(args.api_keys),
        api_key_rate_limit=key_limit,
        max_in_flight_per_replica=args.max_in_flight,
        upstream_timeout_s=args.timeout,
        request_timeout_s=max(60.0, 2 * args.timeout),
        attestation_ttl_s=args.attestation_ttl,
        **extra,
    )


def _serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from gateway._app import create_app
    from gateway._config import ConfigError

    try:
        app = create_app(config_from_args(args))
    except (ConfigError, OSError, UnicodeDecodeError) as exc:
        print(f"pmc2 gateway serve: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one access line per request
    print(
        f"pmc2 gateway: http://{args.host}:{args.port}/v1/infer -> {', '.join(args.replica)}",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
