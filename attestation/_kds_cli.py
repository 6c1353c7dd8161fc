"""``pmc2 snp fetch``: AMD certificates from the Key Distribution Service.

::

    pmc2 snp fetch chain --product Milan [--vlek] [--out FILE]
    pmc2 snp fetch vcek  --product Milan --chip-id HEX --tcb bl=7,tee=0,snp=14,ucode=72
                         [--out FILE] [--pem]
    pmc2 snp fetch vcek  --report REPORT [--product P] [--out FILE] [--pem]
    pmc2 snp fetch crl   --product Milan [--vlek] [--out FILE] [--pem]

Common options: ``--kds-url URL`` (default AMD's KDS), ``--cache DIR`` (on-disk cache),
``--timeout SECONDS``, ``--attempts N``. The chain is written as PEM; the VCEK and CRL
as DER unless ``--pem``. Without ``--out`` the result goes to standard output.

Exit status: 0 fetched; 2 bad input (arguments, report file, output file); 5 KDS or
transport failure (unreachable, timeout, 5xx, 404, rate-limited, or an answer that does
not parse, which is never cached).
"""

from __future__ import annotations

import argparse
import base64
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_TRANSPORT", "parse_tcb_spec", "register"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_TRANSPORT = 5

#: Test seam: when set, the KDS client uses this transport (e.g. ``httpx.MockTransport``).
_transport_override: httpx.BaseTransport | None = None

_TCB_NAMES = {
    "bl": "bootloader",
    "bootloader": "bootloader",
    "tee": "tee",
    "snp": "snp",
    "ucode": "microcode",
    "microcode": "microcode",
    "fmc": "fmc",
}


def parse_tcb_spec(text: str) -> dict[str, int]:
    """Parse ``bl=7,tee=0,snp=14,ucode=72[,fmc=1]`` (decimal or 0x-hex) into components."""
    from attestation._errors import MalformedError

    out: dict[str, int] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        key = _TCB_NAMES.get(name.strip().lower())
        if not sep or key is None:
            raise MalformedError(
                f"bad TCB item {item!r}; expected bl=,tee=,snp=,ucode= and, on Turin, fmc="
            )
        if key in out:
            raise MalformedError(f"TCB component {name!r} given twice")
        try:
            out[key] = int(value.strip(), 0)
        except ValueError as exc:
            raise MalformedError(f"TCB component {name!r}: {value!r} is not a number") from exc
    missing = {"bootloader", "tee", "snp", "microcode"} - out.keys()
    if missing:
        raise MalformedError(f"TCB is missing {', '.join(sorted(missing))}")
    return out


def register(snp: argparse._SubParsersAction[Any]) -> None:
    """Add ``fetch`` to ``pmc2 snp``."""
    fetch_parser = snp.add_parser(
        "fetch",
        help="fetch AMD certificates (chain, VCEK, CRL) from KDS",
        description="Fetch AMD SEV-SNP certificates from AMD's Key Distribution Service.",
        epilog="exit status: 0 ok, 2 bad input, 5 KDS/transport failure",
    )
    fetch = fetch_parser.add_subparsers(dest="fetch_command", metavar="WHAT")

    def usage(args: argparse.Namespace) -> int:
        del args
        fetch_parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT

    fetch_parser.set_defaults(handler=usage)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kds-url", default=None, help="KDS base URL (default: AMD's KDS)")
    common.add_argument("--cache", type=Path, default=None, metavar="DIR", help="cache dir")
    common.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    common.add_argument("--attempts", type=int, default=4, metavar="N", help="tries per request")
    common.add_argument("--out", type=Path, default=None, metavar="FILE", help="output file")

    chain = fetch.add_parser(
        "chain", parents=[common], help="ASK+ARK (or ASVK+ARK with --vlek) as PEM"
    )
    chain.add_argument("--product", required=True, help="Milan, Genoa or Turin")
    chain.add_argument("--vlek", action="store_true", help="the VLEK chain (ASVK, ARK)")
    chain.set_defaults(handler=_run_chain)

    vcek = fetch.add_parser("vcek", parents=[common], help="a chip's VCEK at a TCB (DER)")
    vcek.add_argument("--product", default=None, help="Milan, Genoa or Turin")
    vcek.add_argument("--chip-id", default=None, metavar="HEX", help="CHIP_ID (hex)")
    vcek.add_argument(
        "--tcb", default=None, metavar="SPEC", help="bl=N,tee=N,snp=N,ucode=N[,fmc=N]"
    )
    vcek.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="take CHIP_ID and REPORTED_TCB from this report (binary or hex)",
    )
    vcek.add_argument("--pem", action="store_true", help="write PEM instead of DER")
    vcek.set_defaults(handler=_run_vcek)

    crl = fetch.add_parser("crl", parents=[common], help="the product's CRL (DER)")
    crl.add_argument("--product", required=True, help="Milan, Genoa or Turin")
    crl.add_argument("--vlek", action="store_true", help="the VLEK CRL")
    crl.add_argument("--pem", action="store_true", help="write PEM instead of DER")
    crl.set_defaults(handler=_run_crl)


def _client(args: argparse.Namespace) -> Any:
    from attestation._kds import KDS_BASE_URL, KdsClient, RetryPolicy

    return KdsClient(
        args.kds_url or KDS_BASE_URL,
        transport=_transport_override,
        timeout=args.timeout,
        cache_dir=args.cache,
        retry=RetryPolicy(attempts=args.attempts),
    )


def _pem(label: str, der: bytes) -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode("ascii")


def _emit(args: argparse.Namespace, data: bytes) -> None:
    if args.out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        args.out.write_bytes(data)
        print(f"wrote {len(data)} bytes to {args.out}", file=sys.stderr)


def _guard(args: argparse.Namespace, body: Any) -> int:
    """Run ``body(args)``, mapping the attestation errors to exit statuses."""
    from attestation._errors import AttestationError, FetchError

    if args.attempts < 1 or args.timeout <= 0:
        print("error: --attempts must be >= 1 and --timeout > 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        data: bytes = body(args)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TRANSPORT
    except AttestationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _emit(args, data)
    return EXIT_OK


def _run_chain(args: argparse.Namespace) -> int:
    def body(args: argparse.Namespace) -> bytes:
        from attestation._types import Product

        product = Product.parse(args.product)
        with _client(args) as kds:
            chain = kds.cert_chain(product, "vlek" if args.vlek else "vcek")
        pem: bytes = chain.pem
        return pem

    return _guard(args, body)


def _run_crl(args: argparse.Namespace) -> int:
    def body(args: argparse.Namespace) -> bytes:
        from attestation._types import Product

        product = Product.parse(args.product)
        with _client(args) as kds:
            der: bytes = kds.crl(product, "vlek" if args.vlek else "vcek")
        return _pem("X509 CRL", der) if args.pem else der

    return _guard(args, body)


def _read_report(path: Path) -> bytes:
    raw = path.read_bytes()
    text = raw.strip()
    try:
        if text and all(c in b"0123456789abcdefABCDEF \n\r\t" for c in text):
            return bytes.fromhex(text.decode("ascii"))
    except ValueError:
        pass
    return raw


def _run_vcek(args: argparse.Namespace) -> int:
    def body(args: argparse.Namespace) -> bytes:
        from attestation._errors import MalformedError
        from attestation._types import Product, TcbVersion

        product = Product.parse(args.product) if args.product else None
        if args.report is not None:
            if args.chip_id is not None or args.tcb is not None:
                raise MalformedError("--report replaces --chip-id and --tcb; give one or the other")
            from attestation._abi import AttestationReport, SigningKey

            report = AttestationReport.from_bytes(_read_report(args.report), product)
            if report.signing_key is not SigningKey.VCEK:
                raise MalformedError(
                    f"the report is signed by a {report.signing_key.label}, not a VCEK; "
                    "KDS serves VCEKs only"
                )
            product, chip_id, tcb = report.product, report.chip_id, report.reported_tcb
        else:
            if product is None or args.chip_id is None or args.tcb is None:
                raise MalformedError("give --product, --chip-id and --tcb, or --report")
            try:
                chip_id = bytes.fromhex(args.chip_id.strip().removeprefix("0x"))
            except ValueError as exc:
                raise MalformedError(f"--chip-id is not hex: {exc}") from exc
            tcb = TcbVersion(**parse_tcb_spec(args.tcb))
        with _client(args) as kds:
            der: bytes = kds.vcek(product, chip_id, tcb)
        return _pem("CERTIFICATE", der) if args.pem else der

    return _guard(args, body)
