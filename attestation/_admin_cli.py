"""``pmc2 admin ...``: the operator's commands, and ``pmc2 bench attest``.

::

    pmc2 admin keygen --out operator.key                 # operator.key (0600) + .pub
    pmc2 admin serve --state DIR --operator-key operator.key.pub [--insecure-roots DIR]
    pmc2 admin measure --ovmf OVMF.fd [--kernel ...]     # = pmc2 snp measure
    pmc2 admin register (--measurement HEX | --ovmf FILE ...) --label TEXT
                        [--host-data HEX | --launch-config FILE [--bundle-digest alg:hex]]
                        [--expires 30d | 2027-01-01T00:00:00Z]
    pmc2 admin list | revoke ID
    pmc2 admin policy set appraisal|key-release FILE
    pmc2 admin policy show appraisal|key-release
    pmc2 admin resource put NAME (--value-file FILE | --generate N)
    pmc2 admin resource rotate NAME [--value-file FILE] | resource list
    pmc2 admin audit [--after N] [--limit N]
    pmc2 admin signing-key rotate
    pmc2 bench attest [--iterations N] [--json FILE]

Commands that talk to the service take ``--url`` (default ``$PMC2_ATTESTATION_URL`` or
``http://127.0.0.1:8401``) and ``--key`` (the operator's private key; default
``$PMC2_OPERATOR_KEY``), and print JSON with ``--json``.

Exit status: 0 success; 2 bad input (arguments, files); 3 trust failure (the service
refused the operator's signature or the evidence: 401/403); 4 the service refused the
request otherwise (another 4xx, e.g. an invalid policy); 5 transport failure (service
unreachable, timeout, 5xx, or an answer that is not the protocol's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx

from attestation._errors import MalformedError, VerificationError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_TRANSPORT",
    "EXIT_TRUST",
    "register",
]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_TRUST = 3
EXIT_REFUSED = 4
EXIT_TRANSPORT = 5

DEFAULT_URL = "http://127.0.0.1:8401"

#: Test seam: when set, clients use this transport (e.g. an ASGI bridge) instead of TCP.
_transport_override: httpx.BaseTransport | None = None

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def parse_expiry(text: str, now: dt.datetime) -> int:
    """``30d``/``12h``/``90m``/``45s`` from now, or an ISO 8601 time with a zone."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        return int(now.timestamp()) + int(match[1]) * _UNITS[match[2]]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise MalformedError(
            f"--expires {text!r}: expected a duration (30d, 12h, 90m, 45s) or an ISO 8601 "
            "time with a zone"
        ) from None
    if when.tzinfo is None:
        raise MalformedError(f"--expires {text!r}: give a time zone (e.g. Z)")
    return int(when.timestamp())


def _run_client(args: argparse.Namespace, action: Any) -> int:
    """Run ``action(client)`` with an AdminClient; map errors to exit codes."""
    from attestation._service._client import AdminClient, load_operator_private_key
    from attestation._service._errors import ServiceRefusedError, ServiceUnavailableError

    key_path = args.key or os.environ.get("PMC2_OPERATOR_KEY")
    if not key_path:
        _error("give --key FILE (the operator's private key) or set PMC2_OPERATOR_KEY")
        return EXIT_BAD_INPUT
    url = args.url or os.environ.get("PMC2_ATTESTATION_URL") or DEFAULT_URL
    try:
        key = load_operator_private_key(Path(key_path))
        with AdminClient(url, key, transport=_transport_override, timeout=args.timeout) as client:
            result = action(client)
    except MalformedError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    except ServiceRefusedError as exc:
        _error(f"the service refused: {exc}")
        for failure in exc.failures:
            print(f"  - {failure}", file=sys.stderr)
        return EXIT_TRUST if exc.trust_failure else EXIT_REFUSED
    except ServiceUnavailableError as exc:
        _error(str(exc))
        return EXIT_TRANSPORT
    if result is not None:
        _print(result, args)
    return EXIT_OK


def _print(result: Any, args: argparse.Namespace) -> None:
    if getattr(args, "json", False) or not isinstance(result, dict | list):
        print(json.dumps(result, indent=2) if not isinstance(result, str) else result)
        return
    formatter = getattr(args, "formatter", None)
    if formatter is not None:
        formatter(result)
    else:
        print(json.dumps(result, indent=2))


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", metavar="URL", help=f"service URL (default {DEFAULT_URL})")
    p.add_argument("--key", metavar="FILE", help="operator private key (PEM, 0600)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")


# ---------------------------------------------------------------------------- commands


def _keygen(args: argparse.Namespace) -> int:
    from attestation._service._client import generate_operator_key
    from attestation._service._operator import operator_key_id

    path = Path(args.out)
    try:
        public = generate_operator_key(path)
    except (MalformedError, OSError) as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    print(f"operator key:  {path} (private, 0600)")
    print(f"public key:    {path}.pub (give it to the service: --operator-key)")
    print(f"key id:        {operator_key_id(public)}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from attestation._certs import TrustedRoots
    from attestation._kds import KDS_BASE_URL, KdsClient
    from attestation._service._app import create_app
    from attestation._service._config import ServiceConfig, load_operator_public_key

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        keys = tuple(load_operator_public_key(Path(p)) for p in args.operator_key)
        roots = TrustedRoots.from_dir(Path(args.insecure_roots)) if args.insecure_roots else None
        state = Path(args.state)
        kds = None
        if not args.no_kds:
            kds = KdsClient(args.kds_url or KDS_BASE_URL, cache_dir=state / "kds-cache")
        config = ServiceConfig(
            state_dir=state,
            operator_keys=keys,
            issuer=args.issuer,
            insecure_roots=roots,
            kds=kds,
            nonce_lifetime=args.nonce_lifetime,
        )
        app = create_app(config)
    except (MalformedError, OSError) as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level=args.log_level)
    return EXIT_OK


def _measure(args: argparse.Namespace) -> int:
    from attestation import _sim_cli

    return _sim_cli._measure(args)


def _register(args: argparse.Namespace) -> int:
    from policies import LaunchConfiguration, PolicyError

    try:
        if (args.measurement is None) == (args.ovmf is None):
            raise MalformedError("give either --measurement HEX or --ovmf FILE (launch artifacts)")
        if args.measurement is not None:
            try:
                measurement = bytes.fromhex(args.measurement.strip().removeprefix("0x"))
            except ValueError:
                raise MalformedError("--measurement: not hex") from None
            if len(measurement) != 48:
                raise MalformedError("--measurement must be 48 bytes (96 hex digits)")
        else:
            from attestation import _sim_cli
            from attestation._measure import launch_measurement

            measurement = launch_measurement(_sim_cli._artifacts(args))
        host_data = None
        if args.host_data is not None:
            try:
                host_data = bytes.fromhex(args.host_data.strip().removeprefix("0x"))
            except ValueError:
                raise MalformedError("--host-data: not hex") from None
            if len(host_data) != 32:
                raise MalformedError("--host-data must be 32 bytes (64 hex digits)")
        launch_text = None
        if args.launch_config is not None:
            try:
                config = LaunchConfiguration.from_file(args.launch_config)
                if args.bundle_digest is not None:
                    config = config.with_bundle_digest(args.bundle_digest)
                config.digest()
            except PolicyError as exc:
                raise MalformedError(f"--launch-config: {exc}") from None
            launch_text = config.to_toml()
        elif args.bundle_digest is not None:
            raise MalformedError("--bundle-digest needs --launch-config")
        expires = parse_expiry(args.expires, dt.datetime.now(dt.UTC)) if args.expires else None
    except MalformedError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT

    def action(client: Any) -> Any:
        return client.register(
            measurement,
            args.label,
            host_data=host_data,
            launch_config=launch_text,
            expires_at=expires,
        )

    args.formatter = _format_registration
    return _run_client(args, action)


def _format_registration(reg: dict[str, Any]) -> None:
    print(
        f"registered #{reg['id']} {reg['label']!r}: measurement {reg['measurement']}"
        + (f", host_data {reg['host_data']}" if reg.get("host_data") else "")
        + (f", expires {_when(reg['expires'])}" if reg.get("expires") else "")
    )


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def _list(args: argparse.Namespace) -> int:
    def show(values: list[dict[str, Any]]) -> None:
        if not values:
            print("no reference values registered")
        for r in values:
            print(
                f"#{r['id']:<4} {r['state']:<8} {r['label']!r}\n"
                f"      measurement {r['measurement']}\n"
                f"      host_data   {r['host_data'] or '(any)'}\n"
                f"      expires     {_when(r['expires'])}"
            )

    args.formatter = show
    return _run_client(args, lambda c: c.reference_values())


def _revoke(args: argparse.Namespace) -> int:
    args.formatter = lambda r: print(f"revoked #{r['id']} {r['label']!r}")
    return _run_client(args, lambda c: c.revoke(args.id))


def _policy_set(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_bytes()
    except OSError as exc:
        _error(f"cannot read {args.file}: {exc.strerror}")
        return EXIT_BAD_INPUT
    args.formatter = lambda r: print(f"{r['kind']} policy set, digest {r['digest']}")
    return _run_client(args, lambda c: c.set_policy(args.kind, text))


def _policy_show(args: argparse.Namespace) -> int:
    def show(r: dict[str, Any]) -> None:
        origin = "shipped default" if r.get("default") else "set by an operator"
        print(f"# {r['kind']} policy ({origin}), digest {r['digest']}")
        print(r["document"], end="")

    args.formatter = show
    return _run_client(args, lambda c: c.get_policy(args.kind))


def _resource_value(args: argparse.Namespace, *, required: bool) -> bytes | None:
    if args.value_file is not None and getattr(args, "generate", None) is not None:
        raise MalformedError("give either --value-file or --generate")
    if args.value_file is not None:
        try:
            data = Path(args.value_file).read_bytes()
        except OSError as exc:
            raise MalformedError(f"cannot read {args.value_file}: {exc.strerror}") from None
        if not data:
            raise MalformedError(f"{args.value_file} is empty")
        return data
    size = getattr(args, "generate", None)
    if size is not None:
        if not 1 <= size <= 16384:
            raise MalformedError("--generate N: 1 .. 16384 bytes")
        return os.urandom(size)
    if required:
        raise MalformedError("give --value-file FILE or --generate N")
    return None


def _resource_put(args: argparse.Namespace) -> int:
    try:
        value = _resource_value(args, required=True)
    except MalformedError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    assert value is not None
    args.formatter = lambda r: print(f"resource {r['name']!r} is now version {r['version']}")
    return _run_client(args, lambda c: c.put_resource(args.name, value))


def _resource_rotate(args: argparse.Namespace) -> int:
    try:
        value = _resource_value(args, required=False)
    except MalformedError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    args.formatter = lambda r: print(f"resource {r['name']!r} is now version {r['version']}")
    return _run_client(args, lambda c: c.rotate_resource(args.name, value))


def _resource_list(args: argparse.Namespace) -> int:
    def show(rows: list[dict[str, Any]]) -> None:
        if not rows:
            print("no resources")
        for r in rows:
            print(f"{r['name']:<32} version {r['version']:<4} updated {_when(r['updated'])}")

    args.formatter = show
    return _run_client(args, lambda c: c.resources())


def _audit(args: argparse.Namespace) -> int:
    def show(doc: dict[str, Any]) -> None:
        for e in doc["entries"]:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(e["detail"].items()))
            print(
                f"{e['id']:>6} {_when(e['at'])} {e['event']:<24} {e['outcome']:<10} "
                f"{e['actor']}  {detail}"
            )
        state = "intact" if doc["chain_intact"] else "BROKEN"
        print(f"-- {doc['count']} entries, hash chain {state}")

    args.formatter = show
    return _run_client(args, lambda c: c.audit(after=args.after, limit=args.limit))


def _signing_key_rotate(args: argparse.Namespace) -> int:
    args.formatter = None
    return _run_client(args, lambda c: {"kid": c.rotate_signing_key()})


def _bench(args: argparse.Namespace) -> int:
    from attestation._service._bench import run_benchmark

    try:
        return run_benchmark(args)
    except (MalformedError, VerificationError) as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT


# ---------------------------------------------------------------------------- parser


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add ``pmc2 admin ...`` and ``pmc2 bench attest``."""
    from attestation import _sim_cli

    admin_parser = sub.add_parser(
        "admin", help="operate the attestation service (register, policies, resources)"
    )
    admin = admin_parser.add_subparsers(dest="admin_command", metavar="SUBCOMMAND")

    p = admin.add_parser("keygen", help="create an operator key pair (Ed25519)")
    p.add_argument("--out", metavar="FILE", required=True, help="private key file (0600)")
    p.set_defaults(handler=_keygen)

    p = admin.add_parser("serve", help="run the attestation service (uvicorn)")
    p.add_argument("--state", metavar="DIR", required=True, help="state directory")
    p.add_argument(
        "--operator-key",
        metavar="PUB",
        action="append",
        required=True,
        help="operator public key (PEM or JWK); repeat for several operators",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8401, help="port (default 8401)")
    p.add_argument("--issuer", default="pmc2-attestation-service", help="token issuer (iss)")
    p.add_argument(
        "--insecure-roots",
        metavar="DIR",
        help="trust these roots instead of AMD's (development: the simulated platform's "
        "STATE/roots); tokens then carry ear.status warning",
    )
    p.add_argument("--no-kds", action="store_true", help="never fetch from AMD KDS")
    p.add_argument("--kds-url", metavar="URL", help="KDS base URL (default AMD's)")
    p.add_argument("--nonce-lifetime", type=float, default=300.0, help="seconds (default 300)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(handler=_serve)

    p = admin.add_parser("measure", help="expected launch measurement (= pmc2 snp measure)")
    _sim_cli._add_launch_args(p, required=True)
    p.add_argument("--json", action="store_true", help="print the measurement and the inputs")
    p.set_defaults(handler=_measure)

    p = admin.add_parser("register", help="register a reference value (allowed launch)")
    p.add_argument("--measurement", metavar="HEX", help="launch MEASUREMENT (48 bytes)")
    _sim_cli._add_launch_args(p, required=False)
    p.add_argument("--label", required=True, help="a name for audit and listings")
    p.add_argument("--host-data", metavar="HEX", help="pin HOST_DATA (32 bytes)")
    p.add_argument(
        "--launch-config",
        metavar="FILE",
        help="pin HOST_DATA to this launch configuration's digest (and publish it in tokens)",
    )
    p.add_argument(
        "--bundle-digest", metavar="ALG:HEX", help="fill a launch-configuration template"
    )
    p.add_argument("--expires", metavar="WHEN", help="30d, 12h, ... or ISO 8601 time")
    _add_client_args(p)
    p.set_defaults(handler=_register)

    p = admin.add_parser("list", help="list reference values")
    _add_client_args(p)
    p.set_defaults(handler=_list)

    p = admin.add_parser("revoke", help="revoke a reference value")
    p.add_argument("id", type=int, help="registration id (from list)")
    _add_client_args(p)
    p.set_defaults(handler=_revoke)

    policy_parser = admin.add_parser("policy", help="set or show the service's policies")
    policy = policy_parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    p = policy.add_parser("set", help="set a policy from a TOML file")
    p.add_argument("kind", choices=("appraisal", "key-release"))
    p.add_argument("file", help="the TOML document")
    _add_client_args(p)
    p.set_defaults(handler=_policy_set)
    p = policy.add_parser("show", help="show the policy in force")
    p.add_argument("kind", choices=("appraisal", "key-release"))
    _add_client_args(p)
    p.set_defaults(handler=_policy_show)

    resource_parser = admin.add_parser("resource", help="secrets released to enclaves")
    resource = resource_parser.add_subparsers(dest="resource_command", metavar="SUBCOMMAND")
    p = resource.add_parser("put", help="store a new version of a resource")
    p.add_argument("name")
    p.add_argument("--value-file", metavar="FILE", help="the secret's bytes")
    p.add_argument("--generate", metavar="N", type=int, help="N random bytes")
    _add_client_args(p)
    p.set_defaults(handler=_resource_put)
    p = resource.add_parser("rotate", help="new version (random 32 bytes by default)")
    p.add_argument("name")
    p.add_argument("--value-file", metavar="FILE", help="the new secret's bytes")
    _add_client_args(p)
    p.set_defaults(handler=_resource_rotate)
    p = resource.add_parser("list", help="list resources (names and versions)")
    _add_client_args(p)
    p.set_defaults(handler=_resource_list)

    p = admin.add_parser("audit", help="read the audit log")
    p.add_argument("--after", type=int, default=0, help="entries after this id")
    p.add_argument("--limit", type=int, default=100, help="at most this many (<= 1000)")
    _add_client_args(p)
    p.set_defaults(handler=_audit)

    key_parser = admin.add_parser("signing-key", help="token-signing keys")
    keys = key_parser.add_subparsers(dest="key_command", metavar="SUBCOMMAND")
    p = keys.add_parser("rotate", help="make a new key current (the old one stays in the JWKS)")
    _add_client_args(p)
    p.set_defaults(handler=_signing_key_rotate)

    b = bench.add_parser(
        "attest",
        help="challenge + attest end to end on loopback (p50, p99) and verification throughput",
    )
    b.add_argument("--iterations", type=int, default=200, help="attestations (default 200)")
    b.add_argument("--warmup", type=int, default=10, help="untimed attestations first")
    b.add_argument(
        "--verify-seconds", type=float, default=3.0, help="duration of the throughput run"
    )
    b.add_argument(
        "--platform",
        metavar="DIR",
        help="reuse a simulated platform state directory (default: a new one)",
    )
    b.add_argument("--json", metavar="FILE", help="write the results as JSON")
    b.set_defaults(handler=_bench)
