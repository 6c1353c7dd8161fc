"""``pmc2 snp`` subcommands and the ``pmc2 bench snp`` benchmark.

``verify`` and ``show`` live here; ``fetch`` (KDS) is contributed by ``_kds_cli`` and
``simulate`` / ``measure`` by ``_sim_cli``.

``pmc2 snp verify REPORT --cert CERT [--chain PEM] [--product P] [--roots DIR]
[--at ISO8601] [--policy FILE] [--crl FILE] [--json]``

- REPORT: the 0x4A0-byte report, binary or hex text; CERT: the VCEK or VLEK, DER or
  PEM; ``--chain``: ASK/ASVK (and ARK) as AMD serves them (``cert_chain``);
  ``--roots DIR``: trust the ARKs in ``DIR/<product>/ark.pem`` *instead of* AMD's pinned
  roots (the simulated platform; see ``attestation._certs``); ``--at``: the reference
  time (default: now, UTC); ``--policy``: appraisal options in TOML
  (``attestation._appraise``); ``--crl``: AMD's CRL for the product (DER or PEM).
- Exit status: 0 authentic (and, with ``--policy``, appraised clean); 2 malformed input;
  3 not authentic; 4 authentic but the policy rejects it.
- ``--json`` prints one object: ``authentic``, ``signing_key``, ``product``,
  ``report_version``, ``measurement``, ``host_data``, ``report_data``, ``chip_id``,
  ``vmpl``, ``reported_tcb``, ``policy``, ``platform_info``, ``guest_svn``,
  ``amd_root``, ``roots``, ``at``, ``appraised`` (``null`` without ``--policy``),
  ``errors`` (failure messages; empty on success).

``pmc2 snp show REPORT [--product P] [--json]`` prints every decoded field (a version-2
report needs ``--product``).

``pmc2 bench snp [--iterations N] [--json FILE] [--vectors DIR]`` times complete
verifications (certificate parsing, chain and report) of the real Milan vector at the
fixed reference time 2025-01-01, pinned to one CPU core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attestation import _kds_cli, _sim_cli
from attestation._abi import REPORT_SIZE, AttestationReport
from attestation._errors import MalformedError, VerificationError

__all__ = ["read_report", "register"]

EXIT_OK = 0
EXIT_MALFORMED = 2
EXIT_NOT_AUTHENTIC = 3
EXIT_POLICY = 4

BENCH_AT = datetime(2025, 1, 1, tzinfo=UTC)
_HEX_CHARS = frozenset(b"0123456789abcdefABCDEF \t\r\n")


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add the ``snp`` subcommands to ``pmc2`` and ``snp`` to ``pmc2 bench``."""
    snp_parser = sub.add_parser("snp", help="SEV-SNP evidence: verify, show, fetch, simulate")
    snp = snp_parser.add_subparsers(dest="snp_command", metavar="SUBCOMMAND")

    v = snp.add_parser(
        "verify",
        help="verify a report's authenticity (and appraise it with --policy)",
        description="Exit 0 authentic (and appraised clean), 2 malformed input, "
        "3 not authentic, 4 policy failure.",
    )
    v.add_argument("report", metavar="REPORT", type=Path, help="report file (binary or hex)")
    v.add_argument("--cert", required=True, type=Path, help="VCEK or VLEK (DER or PEM)")
    v.add_argument("--chain", type=Path, help="ASK/ASVK and ARK, PEM, as AMD serves them")
    v.add_argument("--product", help="expected product: Milan, Genoa or Turin")
    v.add_argument(
        "--roots", type=Path, metavar="DIR", help="trust DIR/<product>/ark.pem instead of AMD"
    )
    v.add_argument("--at", metavar="ISO8601", help="reference time (default: now, UTC)")
    v.add_argument("--policy", type=Path, metavar="FILE", help="appraisal options (TOML)")
    v.add_argument("--crl", type=Path, metavar="FILE", help="AMD CRL for the product")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(handler=_run_verify)

    s = snp.add_parser("show", help="print every decoded field of a report")
    s.add_argument("report", metavar="REPORT", type=Path, help="report file (binary or hex)")
    s.add_argument("--product", help="product (needed for version-2 reports)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(handler=_run_show)

    _kds_cli.register(snp)
    _sim_cli.register(snp)

    b = bench.add_parser("snp", help="ms per SEV-SNP verification (chain + report), one core")
    b.add_argument("--iterations", type=int, default=200, metavar="N")
    b.add_argument("--json", type=Path, metavar="FILE", help="also write the result here")
    b.add_argument(
        "--vectors",
        type=Path,
        metavar="DIR",
        help="directory with attestation.bin, vcek.der, ask_ark.pem "
        "(default ../shared/testvectors/sev-snp/go-sev-guest-milan)",
    )
    b.set_defaults(handler=_run_bench)


# -- helpers -------------------------------------------------------------------------


def read_report(path: Path) -> bytes:
    """The report bytes in ``path``: raw binary, or hex text (whitespace ignored)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MalformedError(f"cannot read report {path}: {exc.strerror}") from None
    if len(raw) != REPORT_SIZE and raw.strip() and set(raw) <= _HEX_CHARS:
        text = b"".join(raw.split())
        if text[:2] in (b"0x", b"0X"):
            text = text[2:]
        try:
            return bytes.fromhex(text.decode("ascii"))
        except ValueError:
            raise MalformedError(f"{path}: report hex text is malformed") from None
    return raw


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MalformedError(f"cannot read {what} {path}: {exc.strerror}") from None


def _parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedError(f"--at {text!r} is not an ISO 8601 time") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _product(text: str | None) -> Any:
    from attestation._types import Product

    return None if text is None else Product.parse(text)


def _report_fields(report: AttestationReport | None) -> dict[str, Any]:
    if report is None:
        return {
            "product": None,
            "report_version": None,
            "measurement": None,
            "host_data": None,
            "report_data": None,
            "chip_id": None,
            "vmpl": None,
            "guest_svn": None,
            "reported_tcb": None,
            "policy": None,
            "platform_info": None,
        }
    return {
        "product": report.product.value,
        "report_version": report.version,
        "measurement": report.measurement.hex(),
        "host_data": report.host_data.hex(),
        "report_data": report.report_data.hex(),
        "chip_id": report.chip_id.hex(),
        "vmpl": report.vmpl,
        "guest_svn": report.guest_svn,
        "reported_tcb": report.reported_tcb.components(),
        "policy": report.policy.flags(),
        "platform_info": report.platform_info.flags(),
    }


# -- verify --------------------------------------------------------------------------


def _run_verify(args: argparse.Namespace) -> int:
    from attestation._appraise import AppraisalOptions, appraise
    from attestation._certs import TrustedRoots, load_crl, parse_endorsement_extensions
    from attestation._certs import load_certificate as _load_cert
    from attestation._verify import verify_report

    out: dict[str, Any] = {
        "authentic": False,
        "signing_key": None,
        **_report_fields(None),
        "amd_root": None,
        "roots": None,
        "at": None,
        "appraised": None,
        "errors": [],
    }
    status = EXIT_OK
    try:
        at = _parse_at(args.at)
        out["at"] = at.isoformat()
        product = _product(args.product)
        roots = TrustedRoots.from_dir(args.roots) if args.roots else TrustedRoots.amd_default()
        out["roots"] = roots.label
        options = AppraisalOptions.from_toml(_read(args.policy, "policy")) if args.policy else None
        crl = load_crl(_read(args.crl, "CRL")) if args.crl else None
        raw = read_report(args.report)
        cert_bytes = _read(args.cert, "certificate")
        chain = _read(args.chain, "chain") if args.chain else None
        # the unverified decode, shown in the output even when verification fails
        try:
            hint = product
            if hint is None and AttestationReport.peek_version(raw) == 2:
                hint = parse_endorsement_extensions(_load_cert(cert_bytes)).product
            out.update(_report_fields(AttestationReport.from_bytes(raw, hint)))
        except MalformedError:
            pass
        verified = verify_report(
            raw, cert_bytes, chain, at=at, roots=roots, product=product, crl=crl
        )
        out.update(_report_fields(verified.report))
        out["authentic"] = True
        out["signing_key"] = verified.signing_key
        out["amd_root"] = verified.amd_root
        if options is not None:
            failures = appraise(verified.report, options)
            out["appraised"] = not failures
            out["errors"].extend(failures)
            if failures:
                status = EXIT_POLICY
    except MalformedError as exc:
        out["errors"].append(f"malformed: {exc}")
        status = EXIT_MALFORMED
    except VerificationError as exc:
        out["errors"].append(f"not authentic: {exc}")
        status = EXIT_NOT_AUTHENTIC
    _print_verify(args, out, status)
    return status


def _print_verify(args: argparse.Namespace, out: dict[str, Any], status: int) -> None:
    if args.json:
        print(json.dumps(out, indent=2))
        return
    if out["authentic"]:
        root = "AMD root" if out["amd_root"] else f"explicit roots ({out['roots']})"
        print(
            f"authentic: {out['product']} report v{out['report_version']}, "
            f"signed by {str(out['signing_key']).upper()}, chain to {root}, at {out['at']}"
        )
        print(f"measurement: {out['measurement']}")
        flags = out["policy"]
        print(
            f"policy: debug={flags['debug']} migrate_ma={flags['migrate_ma']} "
            f"smt={flags['smt']}; vmpl={out['vmpl']}; reported_tcb={out['reported_tcb']}"
        )
        if out["appraised"] is True:
            print("appraisal: ok")
    for error in out["errors"]:
        print(error if status != EXIT_POLICY else f"policy: {error}", file=sys.stderr)
    if status == EXIT_POLICY:
        print(f"appraisal: {len(out['errors'])} failure(s)", file=sys.stderr)


# -- show ----------------------------------------------------------------------------


def _run_show(args: argparse.Namespace) -> int:
    try:
        raw = read_report(args.report)
        product = _product(args.product)
        if product is None and len(raw) == REPORT_SIZE and AttestationReport.peek_version(raw) == 2:
            raise MalformedError("a version-2 report does not name its product: pass --product")
        report = AttestationReport.from_bytes(raw, product)
    except MalformedError as exc:
        print(f"malformed: {exc}", file=sys.stderr)
        return EXIT_MALFORMED
    fields = report.to_json_dict()
    if args.json:
        print(json.dumps(fields, indent=2))
        return EXIT_OK
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        shown = (
            ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else value
        )
        print(f"{key:<{width}}  {shown}")
    return EXIT_OK


# -- bench ---------------------------------------------------------------------------


def _default_vectors() -> Path:
    repo = Path(__file__).resolve().parent.parent
    return repo.parent / "shared" / "testvectors" / "sev-snp" / "go-sev-guest-milan"


def _run_bench(args: argparse.Namespace) -> int:
    from attestation._verify import verify_report

    directory: Path = args.vectors or _default_vectors()
    try:
        report = _read(directory / "attestation.bin", "report")
        vcek = _read(directory / "vcek.der", "VCEK")
        chain = _read(directory / "ask_ark.pem", "chain")
    except MalformedError as exc:
        print(f"malformed: {exc}", file=sys.stderr)
        return EXIT_MALFORMED
    if args.iterations < 1:
        print("--iterations must be at least 1", file=sys.stderr)
        return EXIT_MALFORMED
    affinity: list[int] | None = None
    previous: set[int] | None = None
    if hasattr(os, "sched_setaffinity"):
        previous = os.sched_getaffinity(0)
        one = min(previous)
        os.sched_setaffinity(0, {one})
        affinity = [one]
    try:
        verify_report(report, vcek, chain, at=BENCH_AT)  # warm-up, and proves it verifies
        samples = []
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            verify_report(report, vcek, chain, at=BENCH_AT)
            samples.append((time.perf_counter() - t0) * 1000.0)
    finally:
        if previous is not None:
            os.sched_setaffinity(0, previous)
    samples.sort()
    result = {
        "benchmark": "snp-verify",
        "what": "parse VCEK + chain, verify ARK->ASK->VCEK and the report signature",
        "vector": directory.name,
        "at": BENCH_AT.isoformat(),
        "iterations": args.iterations,
        "cpu_affinity": affinity,
        "ms_mean": round(statistics.fmean(samples), 4),
        "ms_median": round(statistics.median(samples), 4),
        "ms_p95": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 4),
        "ms_min": round(samples[0], 4),
        "target_ms": 5.0,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return EXIT_OK
