"""``pmc2 demo --trust-only``: the trust bootstrap, step by step, offline.

The walk-through of what the full demo does behind ``pmc2 up``, with every check shown:

1. the operator computes the enclave's expected launch measurement from its firmware
   (Debian's OVMF) with ``sev-snp-measure`` and registers it as a reference value;
2. a simulated SEV-SNP platform launches the enclave with HOST_DATA = the digest of the
   default launch configuration, and the guest obtains a report bound to a fresh nonce;
3. the verifier proves the report authentic against the simulated root, trusted
   explicitly, and appraises it with the shipped default appraisal policy;
4. negative cases: the same report under AMD's pinned roots, a debug guest, a stale
   nonce, and (when ``../shared`` is present) AMD's real Milan report under a policy
   that forbids debug.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["add_trust_args", "run_trust_demo"]

DEFAULT_OVMF = Path("/usr/share/OVMF/OVMF_CODE.fd")
SHARED_MILAN = Path("..") / "shared" / "testvectors" / "sev-snp" / "go-sev-guest-milan"
# Until the model bundle is built, the launch configuration's bundle digest is a
# recognisable placeholder (the enclave app fills in the real manifest digest).
PLACEHOLDER_BUNDLE = "sha256:" + "00" * 32


def _step(title: str) -> None:
    print(f"\n== {title}")


def _timed(label: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    out = fn()
    print(f"   {label}: {1000 * (time.perf_counter() - start):.1f} ms")
    return out


def run_trust_demo(args: argparse.Namespace) -> int:
    """Run the walk-through; 0 when every check came out as it must."""
    from attestation import (
        AttestationError,
        GuestPolicy,
        TrustedRoots,
        appraise,
        verify_report,
    )
    from attestation._measure import LaunchArtifacts, launch_measurement
    from attestation._sim import SimulatedPlatform
    from policies import ReferenceValue, load_default

    ovmf = Path(args.ovmf)
    if not ovmf.is_file():
        print(f"error: firmware {ovmf} not found (run `make sysdeps` or pass --ovmf)")
        return 2
    state = (
        Path(args.state) / "platform" if args.state else Path(tempfile.mkdtemp(prefix="pmc2-demo-"))
    )
    now = datetime.now(UTC)

    _step("1. operator: expected launch measurement (sev-snp-measure)")
    artifacts = LaunchArtifacts.from_files(ovmf, vcpus=args.vcpus)
    measurement: bytes = _timed("measure", lambda: launch_measurement(artifacts))
    print(f"   firmware    {ovmf} (sha256 {artifacts.ovmf.sha256.hex()[:16]}...)")
    print(f"   vCPUs       {args.vcpus} x {artifacts.vcpu_type}")
    print(f"   MEASUREMENT {measurement.hex()}")
    launch = load_default("launch_config").with_bundle_digest(PLACEHOLDER_BUNDLE)
    host_data = launch.host_data()
    print(f"   HOST_DATA   {host_data.hex()}  (digest of the default launch configuration)")
    registered = [ReferenceValue(measurement=measurement, label="demo enclave")]
    policy = load_default("appraisal")

    _step("2. simulated SEV-SNP platform: launch the enclave, report bound to a nonce")
    platform = _timed("platform (keys, chain)", lambda: SimulatedPlatform.open(state))
    print(f"   state       {state}  ({platform.product.value}, simulated root)")
    guest = platform.launch(artifacts=artifacts, host_data=host_data)
    nonce = secrets.token_bytes(32)
    report_data = hashlib.sha512(nonce).digest()
    evidence = guest.get_report(report_data)
    print(f"   report      {len(evidence.report)} bytes, certificates {len(evidence.certs)}")

    _step("3. verifier: authenticity, then appraisal with the default policy")
    simulated_roots = TrustedRoots.from_dir(platform.roots_dir)
    vcek = platform.vcek_certificate(platform.reported_tcb)
    chain = platform.chain_pem()
    verified = _timed(
        "verify",
        lambda: verify_report(evidence.report, vcek, chain, at=now, roots=simulated_roots),
    )
    print(f"   authentic   signed by {verified.signing_key}, AMD root: {verified.amd_root}")
    options = policy.appraisal_options(
        registered, measurement=measurement, host_data=host_data, report_data=report_data
    )
    failures = appraise(verified.report, options)
    print(f"   appraisal   {'accepted' if not failures else 'REFUSED: ' + '; '.join(failures)}")
    ok = not failures

    _step("4. what must be refused")
    try:
        verify_report(evidence.report, vcek, chain, at=now)
        print("   AMD roots     UNEXPECTEDLY ACCEPTED")
        ok = False
    except AttestationError as exc:
        print(f"   AMD roots     refused: {exc}")
    debug_guest = platform.launch(
        artifacts=artifacts, host_data=host_data, policy=GuestPolicy(smt=True, debug=True)
    )
    debug_report = verify_report(
        debug_guest.report(report_data), vcek, chain, at=now, roots=simulated_roots
    ).report
    refused = appraise(debug_report, options)
    print(f"   debug guest   {'refused: ' + '; '.join(refused) if refused else 'ACCEPTED'}")
    ok = ok and bool(refused)
    stale = policy.appraisal_options(
        registered,
        measurement=measurement,
        host_data=host_data,
        report_data=hashlib.sha512(secrets.token_bytes(32)).digest(),
    )
    refused = appraise(verified.report, stale)
    print(f"   other nonce   {'refused: ' + '; '.join(refused) if refused else 'ACCEPTED'}")
    ok = ok and bool(refused)

    milan = Path(args.vectors)
    if (milan / "attestation.bin").is_file():
        real = verify_report(
            (milan / "attestation.bin").read_bytes(),
            (milan / "vcek.der").read_bytes(),
            (milan / "ask_ark.pem").read_bytes(),
            at=datetime(2025, 6, 1, tzinfo=UTC),
        )
        refused = appraise(
            real.report,
            policy.appraisal_options(
                [ReferenceValue(measurement=real.report.measurement, label="real Milan")],
                measurement=real.report.measurement,
                host_data=real.report.host_data,
            ),
        )
        print(
            f"   real Milan    authentic against AMD's pinned ARK: {real.amd_root}; "
            f"{'refused: ' + '; '.join(refused) if refused else 'ACCEPTED'}"
        )
        ok = ok and bool(refused)
    else:
        print(f"   real Milan    skipped ({milan} not present)")

    print(f"\nPMC2 demo {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


def add_trust_args(p: argparse.ArgumentParser) -> None:
    """The walk-through's options."""
    p.add_argument("--ovmf", default=str(DEFAULT_OVMF), help="enclave firmware (OVMF)")
    p.add_argument("--vcpus", type=int, default=2, help="enclave vCPU count")
    p.add_argument("--vectors", default=str(SHARED_MILAN), help="real Milan test vector dir")
