"""``pmc2 enclave serve|seal-bundle``: run the enclave app; encrypt a model bundle.

``seal-bundle`` (operator, before launch) encrypts a vision bundle under a fresh (or
given) 256-bit key, writes the key file (0600) to be stored at the attestation service
as resource ``model-bundle-key``, prints the manifest digest ``sha384:<hex>``, and with
``--launch-template`` writes the complete launch configuration (its digest, printed, is
the enclave's HOST_DATA, to be registered).

``serve`` boots (steps printed as they complete; exit status 3 with the failed step and
its reason when boot fails) and serves the replica's internal API with uvicorn. Egress
audit records are written to stderr as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PORT", "SimulatedPlatformWarning", "register"]

DEFAULT_PORT = 8403
EXIT_BOOT_FAILED = 3


class SimulatedPlatformWarning(UserWarning):
    """The enclave runs on the simulated SEV-SNP platform: no hardware protection."""


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add ``pmc2 enclave serve`` and ``pmc2 enclave seal-bundle``."""
    enclave = sub.add_parser("enclave", help="the enclave app (inside the confidential VM)")
    esub = enclave.add_subparsers(dest="enclave", metavar="ACTION")

    serve = esub.add_parser("serve", help="boot (attest, key release, bundle) and serve")
    serve.add_argument("--launch-config", type=Path, required=True, help="complete launch config")
    serve.add_argument("--egress-policy", type=Path, required=True, help="egress policy TOML")
    serve.add_argument("--bundle", type=Path, required=True, help="encrypted model bundle")
    serve.add_argument(
        "--provider",
        choices=("configfs-tsm", "sev-guest", "simulated"),
        default="configfs-tsm",
        help="where reports come from (simulated: development only)",
    )
    serve.add_argument("--sim-state", type=Path, help="simulated platform state directory")
    serve.add_argument("--sim-measurement", help="simulated: launch MEASUREMENT (96 hex digits)")
    serve.add_argument("--sim-ovmf", type=Path, help="simulated: measure this OVMF instead")
    serve.add_argument("--sim-vcpus", type=int, default=1, help="simulated: vCPUs measured")
    serve.add_argument("--vmpl", type=int, default=0, help="VMPL of the reports (0)")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    serve.add_argument("--input-size", type=int, default=32, help="model input side (32)")
    serve.add_argument("--single-form", action="store_true", help="one bit-string per image")
    serve.add_argument("--max-batch", type=int, default=32, help="dynamic batch size (32)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="batch wait (5 ms)")
    serve.add_argument("--max-queue", type=int, default=1024, help="queued images (1024)")
    serve.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    serve.add_argument("--cloud-timeout", type=float, default=10.0, help="seconds (10)")
    serve.add_argument("--request-timeout", type=float, default=30.0, help="seconds (30)")
    serve.add_argument("--boot-attempts", type=int, default=8, help="retries at boot (8)")
    serve.add_argument("--jwks", type=Path, help="pin the attestation service's JWKS")
    serve.set_defaults(handler=_serve)

    seal = esub.add_parser("seal-bundle", help="encrypt a model bundle for the enclave")
    seal.add_argument("--bundle-dir", type=Path, required=True, help="vision bundle directory")
    seal.add_argument("--out", type=Path, required=True, help="encrypted bundle file to write")
    key = seal.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", type=Path, help="existing 32-byte key file")
    key.add_argument("--key-out", type=Path, help="generate a key and write it here (0600)")
    seal.add_argument("--launch-template", type=Path, help="launch configuration to complete")
    seal.add_argument("--launch-out", type=Path, help="write the complete configuration here")
    seal.set_defaults(handler=_seal)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _seal(args: argparse.Namespace) -> int:
    from enclave_app._bundlecrypt import (
        BUNDLE_KEY_SIZE,
        BundleCryptError,
        generate_bundle_key,
        seal_bundle,
    )
    from policies import LaunchConfiguration, PolicyError

    if (args.launch_template is None) != (args.launch_out is None):
        print("pmc2 enclave seal-bundle: give --launch-template and --launch-out together")
        return 2
    try:
        if args.key is not None:
            key = args.key.read_bytes()
            if len(key) != BUNDLE_KEY_SIZE:
                raise BundleCryptError(f"{args.key} must hold exactly {BUNDLE_KEY_SIZE} bytes")
        else:
            key = generate_bundle_key()
        data = seal_bundle(args.bundle_dir, key)
        digest = "sha384:" + data[28:76].hex()
        launch = None
        if args.launch_template is not None:
            template = LaunchConfiguration.from_file(args.launch_template)
            launch = template.with_bundle_digest(digest)
        if args.key_out is not None:
            _write_private(args.key_out, key)
        args.out.write_bytes(data)
        if launch is not None:
            args.launch_out.write_text(launch.to_toml())
    except (BundleCryptError, PolicyError, OSError) as exc:
        print(f"pmc2 enclave seal-bundle: {exc}", file=sys.stderr)
        return 1
    print(f"encrypted bundle  {args.out} ({len(data)} bytes)")
    print(f"manifest digest   {digest}")
    if args.key_out is not None:
        print(f"bundle key        {args.key_out} (store it as resource model-bundle-key)")
    if launch is not None:
        print(f"launch config     {args.launch_out}")
        print(f"HOST_DATA         {launch.host_data().hex()}")
    return 0


def _provider(args: argparse.Namespace, host_data: bytes) -> Any:
    from attestation import ConfigfsTsmProvider, SevGuestDeviceProvider

    if args.provider == "configfs-tsm":
        return ConfigfsTsmProvider()
    if args.provider == "sev-guest":
        return SevGuestDeviceProvider()
    from attestation import LaunchArtifacts, SimulatedPlatform

    message = "the enclave runs on the simulated SEV-SNP platform: development only"
    warnings.warn(message, SimulatedPlatformWarning, stacklevel=2)
    if args.sim_state is None:
        raise ValueError("--provider simulated needs --sim-state")
    if (args.sim_measurement is None) == (args.sim_ovmf is None):
        raise ValueError("--provider simulated needs --sim-measurement or --sim-ovmf")
    platform = SimulatedPlatform.open(args.sim_state)
    # The host's part: launch the guest with HOST_DATA = the launch configuration's digest.
    if args.sim_ovmf is not None:
        artifacts = LaunchArtifacts.from_files(args.sim_ovmf, vcpus=args.sim_vcpus)
        return platform.launch(artifacts=artifacts, host_data=host_data)
    return platform.launch(measurement=bytes.fromhex(args.sim_measurement), host_data=host_data)


def _serve(args: argparse.Namespace) -> int:
    from enclave_app._batcher import BatchConfig
    from enclave_app._boot import BootError, BootStep, boot
    from enclave_app._config import EnclaveConfig, RetryPolicy
    from enclave_app._egress import EgressRecord
    from enclave_app._enclave import Enclave
    from enclave_app._http import create_app
    from policies import EgressPolicy, LaunchConfiguration, PolicyError

    try:
        launch = LaunchConfiguration.from_file(args.launch_config)
        egress = EgressPolicy.from_file(args.egress_policy)
        provider = _provider(args, launch.host_data())
        jwks = json.loads(args.jwks.read_text()) if args.jwks is not None else None
        config = EnclaveConfig(
            launch_config=launch,
            egress_policy=egress,
            encrypted_bundle=args.bundle,
            provider=provider,
            vmpl=args.vmpl,
            input_size=args.input_size,
            batch_form=not args.single_form,
            batching=BatchConfig(
                max_batch=args.max_batch,
                max_wait=args.max_wait_ms / 1000.0,
                max_queue=args.max_queue,
            ),
            cloud_timeout=args.cloud_timeout,
            request_timeout=args.request_timeout,
            retry=RetryPolicy(attempts=args.boot_attempts),
            pinned_jwks=jwks,
        )
    except (PolicyError, OSError, ValueError) as exc:
        print(f"pmc2 enclave serve: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    def progress(step: BootStep) -> None:
        detail = f"  {step.detail}" if step.detail else ""
        print(
            f"boot {step.step}. {step.name}: ok ({step.seconds * 1000:.0f} ms){detail}",
            file=sys.stderr,
            flush=True,
        )

    try:
        booted = boot(config, progress=progress)
    except BootError as exc:
        print(f"pmc2 enclave serve: {exc}; not serving", file=sys.stderr)
        return EXIT_BOOT_FAILED

    def audit(record: EgressRecord) -> None:
        if record.outcome != "sent":
            print(json.dumps(record.to_json(), sort_keys=True), file=sys.stderr, flush=True)

    import uvicorn

    enclave = Enclave(booted, egress_sink=audit)
    app = create_app(enclave)
    print(
        f"pmc2 enclave: http://{args.host}:{args.port}/internal/infer "
        f"key {booted.key_pair.key_id.hex} codec {booted.engine.codec_id}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
