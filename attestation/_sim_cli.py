"""``pmc2 snp measure`` and ``pmc2 snp simulate``.

``measure`` prints the expected SNP launch MEASUREMENT of a guest (sev-snp-measure).
``simulate`` creates (or reuses) a simulated platform in a state directory, launches a
guest with the given MEASUREMENT (or launch artifacts), HOST_DATA and policy, and writes
one signed report plus, next to it, the endorsement certificate and its chain as AMD
serves them: ``vcek.der`` + ``cert_chain.pem`` (ASK then ARK), or ``vlek.der`` +
``vlek_cert_chain.pem`` (ASVK then ARK). The simulated root is in ``STATE/roots`` and
is trusted only by ``pmc2 snp verify --roots STATE/roots``.

Exit status: 0 success, 2 malformed input (unreadable file, bad parameter, firmware that
cannot be measured, damaged state directory).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from attestation._errors import MalformedError

__all__ = ["register"]


def _hex_int(text: str) -> int:
    return int(text, 0)


def _add_launch_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--ovmf", metavar="FILE", required=required, help="firmware (OVMF) image")
    p.add_argument("--kernel", metavar="FILE", help="directly booted kernel (measured by hash)")
    p.add_argument("--initrd", metavar="FILE", help="initrd (needs --kernel)")
    p.add_argument("--append", metavar="CMDLINE", help="kernel command line (needs --kernel)")
    p.add_argument("--vcpus", metavar="N", type=int, default=1, help="vCPU count (default 1)")
    p.add_argument(
        "--vcpu-type", metavar="TYPE", default="EPYC-v4", help="QEMU vCPU model (default EPYC-v4)"
    )
    p.add_argument(
        "--guest-features",
        metavar="VALUE",
        type=_hex_int,
        default=0x1,
        help="SEV_FEATURES of the VMSAs (default 0x1)",
    )
    p.add_argument("--vmm-type", metavar="VMM", default="QEMU", help="QEMU (default), ec2, gce")


def _artifacts(args: argparse.Namespace) -> Any:
    from attestation._measure import LaunchArtifacts, VmmType

    return LaunchArtifacts.from_files(
        args.ovmf,
        kernel=args.kernel,
        initrd=args.initrd,
        append=args.append,
        vcpus=args.vcpus,
        vcpu_type=args.vcpu_type,
        guest_features=args.guest_features,
        vmm=VmmType.parse(args.vmm_type),
    )


def _measure(args: argparse.Namespace) -> int:
    from attestation._measure import launch_measurement

    try:
        artifacts = _artifacts(args)
        measurement = launch_measurement(artifacts)
    except MalformedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        doc = {"measurement": measurement.hex(), "artifacts": artifacts.to_json()}
        print(json.dumps(doc, indent=2))
    else:
        print(measurement.hex())
    return 0


def _hex_field(text: str | None, size: int, name: str, *, exact: bool = False) -> bytes:
    """Hex text into a ``size``-byte field (shorter values are zero-padded on the right)."""
    if text is None:
        return bytes(size)
    try:
        raw = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError as exc:
        raise MalformedError(f"{name}: not hex: {exc}") from None
    if len(raw) > size or (exact and len(raw) != size):
        want = f"exactly {size}" if exact else f"at most {size}"
        raise MalformedError(f"{name} must be {want} bytes, got {len(raw)}")
    return raw.ljust(size, b"\0")


def _simulate(args: argparse.Namespace) -> int:
    from attestation._abi import GuestPolicy
    from attestation._provider import check_report_request
    from attestation._sim import SimulatedPlatform
    from attestation._types import Product

    try:
        if args.measurement is not None and args.ovmf is not None:
            raise MalformedError("give either --measurement or --ovmf, not both")
        if args.measurement is None and args.ovmf is None:
            raise MalformedError("give --measurement HEX or --ovmf FILE (launch artifacts)")
        # Everything is validated before the platform is created or loaded.
        report_data = _hex_field(args.report_data, 64, "--report-data")
        host_data = _hex_field(args.host_data, 32, "--host-data")
        check_report_request(report_data, args.vmpl)
        product = Product.parse(args.product) if args.product else None
        policy = GuestPolicy(smt=not args.no_smt, debug=args.debug, migrate_ma=args.migrate_ma)
        launch_kwargs: dict[str, Any] = {
            "host_data": host_data,
            "policy": policy,
            "vlek": args.vlek,
            "version": args.report_version,
            "guest_svn": args.guest_svn,
        }
        if args.measurement is not None:
            launch_kwargs["measurement"] = _hex_field(
                args.measurement, 48, "--measurement", exact=True
            )
        else:
            launch_kwargs["artifacts"] = _artifacts(args)
        platform = SimulatedPlatform.open(args.state, product)
        guest = platform.launch(**launch_kwargs)
        report = guest.report(report_data, vmpl=args.vmpl)
    except MalformedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from cryptography.hazmat.primitives.serialization import Encoding

    out = Path(args.out)
    kind = "vlek" if args.vlek else "vcek"
    cert_path = out.parent / f"{kind}.der"
    chain_path = out.parent / ("vlek_cert_chain.pem" if args.vlek else "cert_chain.pem")
    leaf = platform.vlek if args.vlek else platform.vcek
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(report)
        cert_path.write_bytes(leaf.public_bytes(Encoding.DER))
        chain_path.write_bytes(platform.chain_pem(vlek=args.vlek))
    except OSError as exc:
        print(f"error: cannot write output: {exc}", file=sys.stderr)
        return 2
    doc = {
        "report": str(out),
        "cert": str(cert_path),
        "chain": str(chain_path),
        "roots": str(platform.roots_dir),
        "product": platform.product.value,
        "signing_key": kind,
        "report_version": args.report_version,
        "measurement": guest.measurement.hex(),
        "host_data": guest.host_data.hex(),
        "report_data": report_data.hex(),
        "chip_id": platform.chip_id.hex(),
    }
    if guest.artifacts is not None:
        doc["artifacts"] = guest.artifacts.to_json()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"simulated {platform.product.value} report ({kind}) written")
        for key in ("report", "cert", "chain", "roots", "measurement"):
            print(f"  {key + ':':13} {doc[key]}")
        print(
            f"verify with: pmc2 snp verify {out} --cert {cert_path} --chain {chain_path} "
            f"--roots {platform.roots_dir}"
        )
    return 0


def register(snp: argparse._SubParsersAction[Any]) -> None:
    """Add ``measure`` and ``simulate`` to ``pmc2 snp``."""
    m = snp.add_parser(
        "measure",
        help="expected SNP launch measurement (sev-snp-measure)",
        description="Compute the SEV-SNP launch MEASUREMENT of a guest from its firmware, "
        "optional kernel/initrd/command line and vCPU configuration.",
    )
    _add_launch_args(m, required=True)
    m.add_argument("--json", action="store_true", help="print the measurement and the inputs")
    m.set_defaults(handler=_measure)

    s = snp.add_parser(
        "simulate",
        help="write a report signed by the simulated platform, with its chain",
        description="Create or load a simulated SEV-SNP platform in --state, launch a guest "
        "and write one signed attestation report with its VCEK/VLEK and chain. The "
        "simulated root is trusted only by `pmc2 snp verify --roots STATE/roots`.",
    )
    s.add_argument("--state", metavar="DIR", required=True, help="platform state directory")
    s.add_argument(
        "--product", metavar="PRODUCT", help="Milan (default when creating), Genoa, Turin"
    )
    s.add_argument("--vlek", action="store_true", help="sign with the VLEK instead of the VCEK")
    s.add_argument("--report-data", metavar="HEX", help="REPORT_DATA (<= 64 bytes, zero-padded)")
    s.add_argument("--host-data", metavar="HEX", help="HOST_DATA (<= 32 bytes, zero-padded)")
    s.add_argument("--measurement", metavar="HEX", help="MEASUREMENT (48 bytes) instead of --ovmf")
    _add_launch_args(s, required=False)
    s.add_argument("--debug", action="store_true", help="set POLICY.DEBUG")
    s.add_argument("--migrate-ma", action="store_true", help="set POLICY.MIGRATE_MA")
    s.add_argument("--no-smt", action="store_true", help="clear POLICY.SMT")
    s.add_argument("--vmpl", type=int, default=0, help="VMPL of the request (0-3)")
    s.add_argument("--guest-svn", type=int, default=0, help="GUEST_SVN")
    s.add_argument(
        "--report-version", type=int, choices=(2, 3, 5), default=3, help="report VERSION"
    )
    s.add_argument("--out", metavar="REPORT", required=True, help="where to write the report")
    s.add_argument("--json", action="store_true", help="print the paths and fields as JSON")
    s.set_defaults(handler=_simulate)
