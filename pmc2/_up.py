"""``pmc2 up``: the whole system on loopback with embedded defaults, in one command.

::

    pmc2 up [--state DIR] [--bundle DIR | --tiny-bundle] [--port-base N]
            [--gateway-port P] [--attestation-port P] [--cloud-port P] [--enclave-port P]
            [--ovmf OVMF.fd] [--vcpus N] [--rate R] [--burst B]
            [--max-batch N] [--max-wait-ms MS] [--cloud-device cpu|cuda]
            [--cloud-threads N] [--enclave-threads N] [--startup-timeout S] [--quiet]

Starts the attestation service (trusting the simulated SEV-SNP platform: insecure,
development only; it says so), registers the simulated enclave's measurement and launch
configuration through the operator's admin API, then cloud inference, the enclave app and
the gateway, each a child process logging to ``STATE/logs/`` (see ``pmc2._stack``).
Prints the URLs and the values a client pins (also in ``STATE/client.json``), then runs
until Ctrl-C or SIGTERM, which stop every service (gateway first) and exit 0. A service
that stops on its own stops the others and exits 1. Exit status 2: bad arguments, a
port already taken, a missing firmware or bundle; 3: a service failed to start.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["add_stack_args", "options_from_args", "register"]

EXIT_OK = 0
EXIT_SERVICE_DIED = 1
EXIT_BAD_INPUT = 2
EXIT_START_FAILED = 3


class _Stop(Exception):  # noqa: N818 - a request, not an error
    """SIGTERM or SIGINT: stop the stack."""


def add_stack_args(p: argparse.ArgumentParser, *, port_base: int) -> None:
    """The options ``pmc2 up`` and ``pmc2 bench latency`` share."""
    bundle = p.add_mutually_exclusive_group()
    bundle.add_argument(
        "--bundle", type=Path, default=None, help="vision bundle (default: the committed one)"
    )
    bundle.add_argument(
        "--tiny-bundle",
        action="store_true",
        help="an untrained tiny bundle written to STATE/tiny-bundle (labels mean nothing)",
    )
    p.add_argument(
        "--port-base",
        type=int,
        default=port_base,
        help=f"gateway port; attestation, cloud, enclave the next three (default {port_base})",
    )
    for name in ("gateway", "attestation", "cloud", "enclave"):
        p.add_argument(f"--{name}-port", type=int, default=None, help=f"{name} port override")
    p.add_argument(
        "--ovmf", type=Path, default=None, help="firmware measured (default Debian's OVMF)"
    )
    p.add_argument("--vcpus", type=int, default=1, help="vCPUs measured (default 1)")
    p.add_argument("--max-batch", type=int, default=32, help="enclave dynamic batch (32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="enclave batch wait (5 ms)")
    p.add_argument("--cloud-device", default="cpu", help="cloud inference device (cpu)")
    p.add_argument("--cloud-threads", type=int, default=None, help="cloud torch threads")
    p.add_argument("--enclave-threads", type=int, default=None, help="enclave torch threads")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds per service (300)")


def options_from_args(args: argparse.Namespace, state: Path, *, progress: Any, **extra: Any) -> Any:
    """:class:`pmc2._stack.StackOptions` from the shared arguments (``ValueError`` or
    :class:`pmc2._stack.StackError` when they do not describe a usable stack, e.g. a
    port is taken)."""
    from pmc2._stack import (
        DEFAULT_OVMF,
        Ports,
        StackError,
        StackOptions,
        check_ports_free,
        write_tiny_bundle,
    )

    base = Ports.from_base(args.port_base) if 1 <= args.port_base <= 65532 else None
    if base is None:
        raise ValueError("--port-base must be 1..65532")
    ports = Ports(
        gateway=args.gateway_port or base.gateway,
        attestation=args.attestation_port or base.attestation,
        cloud=args.cloud_port or base.cloud,
        enclave=args.enclave_port or base.enclave,
    )
    host = extra.get("host", "127.0.0.1")
    check_ports_free(host, ports.as_dict())  # before anything slow
    if args.tiny_bundle:
        bundle = write_tiny_bundle(state / "tiny-bundle")
    else:
        from vision import DEFAULT_BUNDLE_DIR

        bundle = args.bundle or DEFAULT_BUNDLE_DIR
        if not (bundle / "manifest.json").is_file():
            raise StackError(
                f"no model bundle at {bundle}"
                + (" (training has not produced the committed one yet)" if not args.bundle else "")
                + ": pass --bundle DIR, or --tiny-bundle for an untrained one"
            )
    return StackOptions(
        state_dir=state,
        bundle_dir=bundle,
        ports=ports,
        ovmf=args.ovmf or DEFAULT_OVMF,
        vcpus=args.vcpus,
        enclave_max_batch=args.max_batch,
        enclave_max_wait_ms=args.max_wait_ms,
        cloud_device=args.cloud_device,
        cloud_threads=args.cloud_threads,
        enclave_threads=args.enclave_threads,
        startup_timeout=args.startup_timeout,
        progress=progress,
        **extra,
    )


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add ``pmc2 up``, ``pmc2 bench latency`` and ``pmc2 bench baseline-cloud``."""
    from pmc2 import _bench_latency

    p = sub.add_parser(
        "up",
        help="run the whole system on loopback (simulated SEV-SNP platform: development only)",
        description=__doc__.split("::")[0].strip() if __doc__ else None,
    )
    p.add_argument(
        "--state",
        type=Path,
        default=Path("state"),
        help="state directory, reused when it exists (default ./state)",
    )
    add_stack_args(p, port_base=8400)
    p.add_argument("--rate", type=float, default=10.0, help="gateway requests/s per client (10)")
    p.add_argument("--burst", type=int, default=20, help="gateway burst per client (20)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(handler=_run)
    _bench_latency.register(bench)


def _summary(stack: Any) -> str:
    info = stack.client_info()
    paths = stack.paths
    pin = ",".join(info["jwks_thumbprints"])
    lines = [
        "",
        "PMC2 is up on loopback. WARNING: simulated SEV-SNP platform, insecure roots: "
        "development only, no hardware protection.",
        "",
        f"  gateway              {info['gateway_url']}  "
        "(POST /v1/infer, GET /v1/attestation, /healthz, /metrics, /openapi.json)",
        f"  attestation service  {info['attestation_url']}  (JWKS {info['jwks_url']})",
        f"  cloud inference      {info['internal']['cloud_url']}  (internal: the enclave's peer)",
        f"  enclave replica      {info['internal']['enclave_url']}  (internal: the gateway's)",
        "",
        f"  JWKS pin             {pin}",
        f"  measurement          {info['measurement']}",
        f"  launch-config digest {info['launch_config_digest']}  (HOST_DATA)",
        f"  egress-policy digest {info['egress_policy_digest']}",
        f"  model bundle         {info['model_bundle_digest']}  (codec {info['codec']})",
        "",
        f"  client values        {paths.client_json}",
        f"  logs                 {paths.logs}/",
        "",
        "  classify an image:",
        f"    pmc2 classify IMAGE --gateway {info['gateway_url']} "
        f"--attestation {info['attestation_url']} --jwks-pin {pin} "
        f"--expect-measurement {info['measurement']} "
        f"--expect-host-data {info['launch_config_digest']} --insecure-simulated-platform",
        "",
        "Ctrl-C (or SIGTERM) stops everything.",
    ]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    import warnings

    from attestation import InsecureRootsWarning
    from pmc2._stack import DevStack, StackError

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"pmc2 up: {line}", file=sys.stderr, flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    state: Path = args.state
    try:
        options = options_from_args(
            args, state, progress=progress, gateway_rate=args.rate, gateway_burst=args.burst
        )
    except (ValueError, StackError, OSError) as exc:
        print(f"pmc2 up: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    stack = DevStack(options)
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    code = EXIT_OK
    try:
        with warnings.catch_warnings():
            # said in the summary and logged by the service itself; print it once here
            warnings.simplefilter("ignore", InsecureRootsWarning)
            print(
                "pmc2 up: WARNING: the attestation service will trust the simulated "
                "platform's root (--insecure-roots): development only",
                file=sys.stderr,
                flush=True,
            )
            try:
                stack.start()
            except StackError as exc:
                print(f"pmc2 up: {exc}", file=sys.stderr)
                return EXIT_START_FAILED
        print(_summary(stack), flush=True)
        while True:
            time.sleep(0.5)
            try:
                stack.check_running()
            except StackError as exc:
                print(f"pmc2 up: {exc}; stopping", file=sys.stderr)
                code = EXIT_SERVICE_DIED
                break
    except (_Stop, KeyboardInterrupt) as exc:
        name = str(exc) or "SIGINT"
        print(f"pmc2 up: {name}: stopping", file=sys.stderr, flush=True)
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        with contextlib.suppress(Exception):
            stack.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code == EXIT_OK:
        print("pmc2 up: stopped", file=sys.stderr)
    return code
