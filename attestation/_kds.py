"""A client for AMD's Key Distribution Service (KDS).

Endpoints (AMD pub. 57230 "Versioned Chip Endorsement Key (VCEK) Certificate and KDS
Interface Specification", section 4, and AMD's VLEK documentation):

- ``GET {base}/vcek/v1/{product}/cert_chain``: PEM, the ASK then the ARK;
- ``GET {base}/vlek/v1/{product}/cert_chain``: PEM, the ASVK then the ARK;
- ``GET {base}/{vcek|vlek}/v1/{product}/crl``: DER CRL signed by the ARK;
- ``GET {base}/vcek/v1/{product}/{hwid}?blSPL=BB&teeSPL=TT&snpSPL=SS&ucodeSPL=UU``: the
  DER VCEK. ``hwid`` is the report's CHIP_ID in lowercase hex: all 64 bytes on Milan and
  Genoa, the first 8 bytes on Turin, whose query also carries ``fmcSPL`` (sent first, as
  AMD's and virtee's tooling do). SPLs are decimal, zero-padded to two digits as in AMD's
  examples (KDS also accepts unpadded values).

Behaviour:

1. Every response is checked before it is returned or cached: a chain must be exactly
   two PEM certificates, the second self-issued with ``CN=ARK-{product}`` and the first
   issued by it; a VCEK must be one DER certificate with a P-384 key whose hwID and SPL
   extensions (when present) equal what was asked; a CRL must parse as DER and be issued
   by the ARK's name. Garbage is never cached. These checks are hygiene only: the
   verifier (``attestation._verify``) checks signatures against the pinned roots.
2. Cache (optional directory): chains and CRLs keyed by product and key kind, VCEKs by
   product, hwid and TCB. Files are written atomically (temporary file + ``os.replace``).
   A cached entry is used only while it still passes the checks of step 1 and is
   current at the injected clock (certificates not expired, CRL before its nextUpdate);
   otherwise it is refetched. A world-writable cache directory is refused.
3. 429: honour ``Retry-After`` (delta-seconds or HTTP-date) up to ``RetryPolicy.max_wait``
   and ``RetryPolicy.attempts`` tries, then :class:`RateLimitedError`. 5xx, connection
   errors and timeouts: exponential back-off within the same budget, then
   :class:`FetchError`. 404: :class:`FetchError` saying KDS does not know the chip/TCB.
   Other statuses: :class:`FetchError` at once. ``sleep`` and ``clock`` are injected.
4. No real network in tests: pass ``transport=httpx.MockTransport(...)``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import os
import stat
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from attestation._errors import FetchError, MalformedError, RateLimitedError
from attestation._types import OID, Product, TcbVersion

__all__ = [
    "KDS_BASE_URL",
    "AmdChain",
    "KdsClient",
    "KeyKind",
    "RetryPolicy",
    "kds_hwid",
    "load_vcek_der",
    "vcek_path",
]

KDS_BASE_URL = "https://kdsintf.amd.com"
KeyKind = Literal["vcek", "vlek"]
#: Largest body accepted from KDS (certificates are ~1.5 KiB, CRLs a few KiB).
MAX_BODY = 1 << 20
CHIP_ID_SIZE = 64
TURIN_HWID_SIZE = 8

_T = TypeVar("_T")
_SERIAL_WARNING = "Parsed a serial number which wasn't positive"


def load_vcek_der(data: bytes) -> x509.Certificate:
    """Parse a DER VCEK/VLEK, tolerating (only) the zero-serial warning AMD's VCEKs cause.

    AMD issues VCEKs with serial number 0, which RFC 5280 forbids and ``cryptography``
    reports with a ``CryptographyDeprecationWarning``; that one warning is suppressed
    here, locally, and nothing else.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning
            )
            return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise MalformedError(f"not a DER certificate: {exc}") from exc


def kds_hwid(product: Product, chip_id: bytes) -> str:
    """The ``{hwid}`` path segment: the CHIP_ID (8 bytes of it on Turin) in lowercase hex.

    ``chip_id`` is the 64-byte CHIP_ID of a report; on Turin the 8-byte hwID alone is
    also accepted. An all-zero CHIP_ID (MASK_CHIP_ID set) cannot be looked up.
    """
    if product is Product.TURIN:
        if len(chip_id) not in (TURIN_HWID_SIZE, CHIP_ID_SIZE):
            raise MalformedError(
                f"Turin CHIP_ID must be {TURIN_HWID_SIZE} or {CHIP_ID_SIZE} bytes, "
                f"got {len(chip_id)}"
            )
        hwid = chip_id[:TURIN_HWID_SIZE]
    else:
        if len(chip_id) != CHIP_ID_SIZE:
            raise MalformedError(
                f"{product.value} CHIP_ID must be {CHIP_ID_SIZE} bytes, got {len(chip_id)}"
            )
        hwid = chip_id
    if not any(hwid):
        raise MalformedError("CHIP_ID is all zero (MASK_CHIP_ID?): KDS cannot serve a VCEK")
    return hwid.hex()


def _tcb_query(product: Product, tcb: TcbVersion) -> str:
    parts = [
        ("blSPL", tcb.bootloader),
        ("teeSPL", tcb.tee),
        ("snpSPL", tcb.snp),
        ("ucodeSPL", tcb.microcode),
    ]
    if product.has_fmc:
        if tcb.fmc is None:
            raise MalformedError("a Turin VCEK request needs the FMC SPL")
        parts.insert(0, ("fmcSPL", tcb.fmc))
    elif tcb.fmc is not None:
        raise MalformedError(f"{product.value} has no FMC SPL")
    return "&".join(f"{name}={value:02d}" for name, value in parts)


def vcek_path(product: Product, chip_id: bytes, tcb: TcbVersion) -> str:
    """The VCEK request path and query, e.g. ``/vcek/v1/Milan/<hwid>?blSPL=07&...``."""
    return f"/vcek/v1/{product.value}/{kds_hwid(product, chip_id)}?{_tcb_query(product, tcb)}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` tries in all; back-off ``base * 2**n`` up to ``cap``.

    ``max_wait`` bounds one honoured ``Retry-After``: a longer one ends the retries at
    once with :class:`RateLimitedError` (carrying the server's value).
    """

    attempts: int = 4
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    max_wait: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_cap < 0 or self.max_wait < 0:
            raise ValueError("RetryPolicy delays must be non-negative")

    def backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (0-based)."""
        return float(min(self.backoff_cap, self.backoff_base * (2**retry)))


@dataclass(frozen=True, slots=True)
class AmdChain:
    """An AMD intermediate (ASK for VCEKs, ASVK for VLEKs) and root (ARK), as served."""

    product: Product
    key: KeyKind
    intermediate: x509.Certificate
    ark: x509.Certificate
    pem: bytes

    @property
    def ask(self) -> x509.Certificate:
        """Alias of ``intermediate`` (the ASK, or the ASVK for a VLEK chain)."""
        return self.intermediate


def _cn(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _parse_chain(product: Product, key: KeyKind, pem: bytes) -> AmdChain:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise MalformedError(f"KDS {key} cert_chain is not PEM certificates: {exc}") from exc
    if len(certs) != 2:
        raise MalformedError(f"KDS {key} cert_chain holds {len(certs)} certificates, expected 2")
    intermediate, ark = certs
    if ark.subject != ark.issuer or _cn(ark.subject) != f"ARK-{product.value}":
        raise MalformedError(
            f"KDS {key} cert_chain: second certificate is not the self-issued "
            f"ARK-{product.value} (subject {ark.subject.rfc4514_string()})"
        )
    if intermediate.issuer != ark.subject:
        raise MalformedError(f"KDS {key} cert_chain: first certificate is not issued by the ARK")
    return AmdChain(product=product, key=key, intermediate=intermediate, ark=ark, pem=pem)


def _der_small_int(value: bytes) -> int | None:
    """Decode a DER INTEGER of 1-2 content bytes (the SPL extensions); ``None`` otherwise."""
    if len(value) < 3 or value[0] != 0x02 or value[1] != len(value) - 2 or value[1] > 2:
        return None
    return int.from_bytes(value[2:], "big", signed=True)


def _check_vcek(cert: x509.Certificate, hwid: str, product: Product, tcb: TcbVersion) -> None:
    """Hygiene: the certificate is the one asked for (see the module docstring, step 1)."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise MalformedError("KDS VCEK does not carry an EC P-384 public key")
    extensions = {ext.oid.dotted_string: ext.value for ext in cert.extensions}

    def raw(oid: str) -> bytes | None:
        value = extensions.get(oid)
        return value.value if isinstance(value, x509.UnrecognizedExtension) else None

    hw = raw(OID.HW_ID)
    if hw is not None and hw.hex() != hwid:
        raise MalformedError("KDS VCEK hwID does not match the requested CHIP_ID")
    wanted = {
        OID.BL_SPL: tcb.bootloader,
        OID.TEE_SPL: tcb.tee,
        OID.SNP_SPL: tcb.snp,
        OID.UCODE_SPL: tcb.microcode,
    }
    if product.has_fmc and tcb.fmc is not None:
        wanted[OID.FMC_SPL] = tcb.fmc
    for oid, value in wanted.items():
        encoded = raw(oid)
        if encoded is not None and _der_small_int(encoded) != value:
            raise MalformedError(f"KDS VCEK extension {oid} does not match the requested TCB")


def _check_crl(der: bytes) -> x509.CertificateRevocationList:
    try:
        return x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise MalformedError(f"KDS CRL is not a DER CRL: {exc}") from exc


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Cache:
    """Atomic file cache under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if root.exists():
            _refuse_world_writable(root)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def read(self, path: Path) -> bytes | None:
        try:
            with path.open("rb") as fh:
                return fh.read(MAX_BODY + 1)
        except FileNotFoundError:
            return None
        except OSError:
            return None

    def write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        _refuse_world_writable(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _refuse_world_writable(directory: Path) -> None:
    if directory.stat().st_mode & stat.S_IWOTH:
        raise MalformedError(f"refusing world-writable KDS cache directory {directory}")


class KdsClient:
    """Fetches AMD certificates from KDS, with retries and an optional on-disk cache.

    ``transport`` is the network seam (``httpx.MockTransport`` in tests); ``sleep`` and
    ``clock`` are injected so tests neither wait nor depend on the wall clock.
    """

    def __init__(
        self,
        base_url: str = KDS_BASE_URL,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        cache_dir: Path | str | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise MalformedError(f"KDS base URL must be http(s): {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.retry = retry if retry is not None else RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._cache = _Cache(Path(cache_dir)) if cache_dir is not None else None
        self._http = httpx.Client(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": "pmc2-kds/1"},
        )

    # Lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KdsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Public API -------------------------------------------------------------------
    def cert_chain(self, product: Product | str, key: KeyKind = "vcek") -> AmdChain:
        """The product's ASK (or ASVK for ``key="vlek"``) and ARK."""
        prod = _product(product)
        kind = _key(key)
        path = f"/{kind}/v1/{prod.value}/cert_chain"
        cache = self._cache.path(prod.value, kind, "cert_chain.pem") if self._cache else None

        def parse(data: bytes) -> AmdChain:
            return _parse_chain(prod, kind, data)

        def current(chain: AmdChain) -> bool:
            return self._current(chain.intermediate, chain.ark)

        return self._get(path, cache, parse, current, what=f"{prod.value} {kind} certificate chain")

    def vcek(self, product: Product | str, chip_id: bytes, tcb: TcbVersion) -> bytes:
        """The DER VCEK of ``chip_id`` (report CHIP_ID) at ``tcb`` (report REPORTED_TCB)."""
        prod = _product(product)
        hwid = kds_hwid(prod, chip_id)
        path = vcek_path(prod, chip_id, tcb)
        cache = None
        if self._cache is not None:
            name = "_".join(f"{k}{v}" for k, v in tcb.components().items()) + ".der"
            cache = self._cache.path(prod.value, "vcek", hwid, name)

        def parse(data: bytes) -> x509.Certificate:
            cert = load_vcek_der(data)
            _check_vcek(cert, hwid, prod, tcb)
            return cert

        cert = self._get(
            path,
            cache,
            parse,
            self._current,
            what=f"{prod.value} VCEK for chip {hwid[:16]}… at TCB {tcb}",
        )
        return cert.public_bytes(serialization.Encoding.DER)

    def crl(self, product: Product | str, key: KeyKind = "vcek") -> bytes:
        """The product's DER CRL (signed by the ARK; verify it before use)."""
        prod = _product(product)
        kind = _key(key)
        path = f"/{kind}/v1/{prod.value}/crl"
        cache = self._cache.path(prod.value, kind, "crl.der") if self._cache else None

        def parse(data: bytes) -> x509.CertificateRevocationList:
            crl = _check_crl(data)
            if _cn(crl.issuer) != f"ARK-{prod.value}":
                raise MalformedError(f"KDS CRL issuer is not ARK-{prod.value}")
            return crl

        def current(crl: x509.CertificateRevocationList) -> bool:
            next_update = crl.next_update_utc
            return next_update is not None and self._clock() < next_update

        crl = self._get(path, cache, parse, current, what=f"{prod.value} {kind} CRL")
        return crl.public_bytes(serialization.Encoding.DER)

    # Internals --------------------------------------------------------------------
    def _current(self, *certs: x509.Certificate) -> bool:
        now = self._clock()
        return all(c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in certs)

    def _get(
        self,
        path: str,
        cache: Path | None,
        parse: Callable[[bytes], _T],
        current: Callable[[_T], bool],
        *,
        what: str,
    ) -> _T:
        """Cache hit (parses and is current at the clock), else fetch, check, cache."""
        if cache is not None and self._cache is not None:
            cached = self._cache.read(cache)
            if cached is not None:
                try:
                    value = parse(cached)
                except MalformedError:
                    pass  # damaged: refetch and overwrite
                else:
                    if current(value):
                        return value
        body = self._fetch(path, what)
        try:
            value = parse(body)
        except MalformedError as exc:
            raise FetchError(f"KDS returned an unusable {what}: {exc}") from exc
        if cache is not None and self._cache is not None:
            self._cache.write(cache, body)
        return value

    def _fetch(self, path: str, what: str) -> bytes:
        url = self.base_url + path
        policy = self.retry
        last_problem = ""
        retry_after: float | None = None
        for attempt in range(policy.attempts):
            last = attempt == policy.attempts - 1
            try:
                status, headers, body = self._request(url)
            except httpx.RequestError as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
                if last:
                    break
                self._sleep(policy.backoff(attempt))
                continue
            if status == 200:
                return body
            if status == 429:
                retry_after = _retry_after(headers.get("retry-after"), self._clock())
                last_problem = "HTTP 429 Too Many Requests"
                if retry_after is not None and retry_after > policy.max_wait:
                    raise RateLimitedError(
                        f"KDS rate limit for {what}: server asks to wait {retry_after:.0f} s "
                        f"(more than {policy.max_wait:.0f} s) ({url})",
                        retry_after,
                    )
                if last:
                    raise RateLimitedError(
                        f"KDS rate limit for {what} persisted after {policy.attempts} "
                        f"attempts ({url})",
                        retry_after,
                    )
                self._sleep(retry_after if retry_after is not None else policy.backoff(attempt))
                continue
            if status == 404:
                raise FetchError(
                    f"KDS does not know the {what} (HTTP 404; unknown chip id, TCB or "
                    f"product?) ({url})"
                )
            if 500 <= status <= 599:
                last_problem = f"HTTP {status}"
                if last:
                    break
                self._sleep(policy.backoff(attempt))
                continue
            snippet = body[:200].decode("utf-8", "replace").strip()
            raise FetchError(f"KDS answered HTTP {status} for {what} ({url}): {snippet}")
        raise FetchError(
            f"KDS unavailable for {what} after {policy.attempts} attempts: {last_problem} ({url})"
        )

    def _request(self, url: str) -> tuple[int, httpx.Headers, bytes]:
        with self._http.stream("GET", url) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_BODY:
                    raise FetchError(f"KDS response larger than {MAX_BODY} bytes ({url})")
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)


def _retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (RFC 9110 §10.2.3); ``None`` if absent/invalid."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _product(product: Product | str) -> Product:
    return product if isinstance(product, Product) else Product.parse(product)


def _key(key: str) -> KeyKind:
    if key == "vcek":
        return "vcek"
    if key == "vlek":
        return "vlek"
    raise MalformedError(f"key kind must be 'vcek' or 'vlek', got {key!r}")
