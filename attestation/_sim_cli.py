"""``pmc2 snp measure`` and ``pmc2 snp simulate``.

Exit status: 0 success, 2 malformed input (unreadable file, bad parameter, firmware that
cannot be measured).
"""

from __future__ import annotations

import argparse
import json
import sys
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
