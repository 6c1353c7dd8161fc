"""KDS client: URL forms, validation, cache, 429/5xx/transport handling, CLI.

Network only through ``httpx.MockTransport``; time only through injected clock/sleep.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation import _kds_cli
from attestation._errors import FetchError, MalformedError, RateLimitedError
from attestation._kds import (
    KdsClient,
    RetryPolicy,
    _retry_after,
    kds_hwid,
    load_vcek_der,
    vcek_path,
)
from attestation._types import OID, Product, TcbVersion
from pmc2.cli import main
from tests.conftest import require_shared

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
CHIP_ID = bytes(range(1, 65))
MILAN_TCB = TcbVersion(bootloader=7, tee=0, snp=14, microcode=72)
TURIN_TCB = TcbVersion(bootloader=1, tee=2, snp=4, microcode=5, fmc=3)

Handler = Callable[[httpx.Request], httpx.Response]


# --- synthetic AMD-like material (structure only; the verifier tests signatures) ----------


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    not_after: dt.datetime = NOW + dt.timedelta(days=365),
    extensions: dict[str, bytes] | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(not_after)
    )
    for oid, value in (extensions or {}).items():
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
    return builder.sign(signer, hashes.SHA384())


def _der_int(value: int) -> bytes:
    return bytes([0x02, 0x01, value]) if value < 0x80 else bytes([0x02, 0x02, 0x00, value])


@dataclass
class Amd:
    product: Product
    ark_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ask_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def chain_pem(self, intermediate: str = "SEV", not_after: dt.datetime | None = None) -> bytes:
        p = self.product.value
        end = not_after or NOW + dt.timedelta(days=3650)
        ark = _cert(f"ARK-{p}", f"ARK-{p}", self.ark_key, self.ark_key, not_after=end)
        ask = _cert(f"{intermediate}-{p}", f"ARK-{p}", self.ask_key, self.ark_key, not_after=end)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (ask, ark))

    def vcek_der(
        self, hwid: bytes, tcb: TcbVersion, *, not_after: dt.datetime | None = None
    ) -> bytes:
        ext = {
            OID.HW_ID: hwid,
            OID.BL_SPL: _der_int(tcb.bootloader),
            OID.TEE_SPL: _der_int(tcb.tee),
            OID.SNP_SPL: _der_int(tcb.snp),
            OID.UCODE_SPL: _der_int(tcb.microcode),
        }
        if tcb.fmc is not None:
            ext[OID.FMC_SPL] = _der_int(tcb.fmc)
        key = ec.generate_private_key(ec.SECP384R1())
        cert = _cert(
            "SEV-VCEK",
            f"SEV-{self.product.value}",
            key,
            self.ask_key,
            not_after=not_after or NOW + dt.timedelta(days=365),
            extensions=ext,
        )
        return cert.public_bytes(serialization.Encoding.DER)

    def crl_der(self, next_update: dt.datetime | None = None) -> bytes:
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(_name(f"ARK-{self.product.value}"))
            .last_update(NOW - dt.timedelta(days=1))
            .next_update(next_update or NOW + dt.timedelta(days=7))
            .sign(self.ark_key, hashes.SHA384())
        )
        return crl.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def milan() -> Amd:
    return Amd(Product.MILAN)


@pytest.fixture(scope="module")
def turin() -> Amd:
    return Amd(Product.TURIN)


class Recorder:
    """A MockTransport handler that answers from a list of responses (or a callable)."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.responses:
            raise AssertionError(f"unexpected request {request.url}")
        item = self.responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    @property
    def urls(self) -> list[str]:
        return [str(r.url) for r in self.requests]


def _client(
    handler: Handler,
    *,
    cache: Path | None = None,
    sleeps: list[float] | None = None,
    retry: RetryPolicy | None = None,
    clock: dt.datetime = NOW,
) -> KdsClient:
    record = sleeps if sleeps is not None else []
    return KdsClient(
        transport=httpx.MockTransport(handler),
        cache_dir=cache,
        retry=retry or RetryPolicy(attempts=4, backoff_base=1.0, backoff_cap=30.0),
        sleep=record.append,
        clock=lambda: clock,
    )


def _no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"network used: {request.url}")


# --- URL forms ----------------------------------------------------------------------------


def test_milan_vcek_url_uses_full_chip_id_and_two_digit_spls() -> None:
    path = vcek_path(Product.MILAN, CHIP_ID, MILAN_TCB)
    assert path == (f"/vcek/v1/Milan/{CHIP_ID.hex()}?blSPL=07&teeSPL=00&snpSPL=14&ucodeSPL=72")
    assert len(kds_hwid(Product.GENOA, CHIP_ID)) == 128


def test_turin_vcek_url_uses_eight_byte_hwid_and_fmc() -> None:
    expected = "/vcek/v1/Turin/0102030405060708?fmcSPL=03&blSPL=01&teeSPL=02&snpSPL=04&ucodeSPL=05"
    assert vcek_path(Product.TURIN, CHIP_ID, TURIN_TCB) == expected
    assert vcek_path(Product.TURIN, CHIP_ID[:8], TURIN_TCB) == expected


@pytest.mark.parametrize(
    ("product", "chip_id", "tcb", "message"),
    [
        (Product.TURIN, CHIP_ID, MILAN_TCB, "FMC"),
        (Product.MILAN, CHIP_ID, TURIN_TCB, "no FMC"),
        (Product.MILAN, CHIP_ID[:8], MILAN_TCB, "64 bytes"),
        (Product.TURIN, CHIP_ID[:9], TURIN_TCB, "8 or 64"),
        (Product.GENOA, bytes(64), MILAN_TCB, "all zero"),
    ],
)
def test_vcek_url_rejects_bad_input(
    product: Product, chip_id: bytes, tcb: TcbVersion, message: str
) -> None:
    with pytest.raises(MalformedError, match=message):
        vcek_path(product, chip_id, tcb)


def test_milan_vcek_fetch_hits_expected_url(milan: Amd) -> None:
    der = milan.vcek_der(CHIP_ID, MILAN_TCB)
    rec = Recorder(httpx.Response(200, content=der))
    with _client(rec) as kds:
        assert kds.vcek("Milan", CHIP_ID, MILAN_TCB) == der
    assert rec.urls == [
        "https://kdsintf.amd.com/vcek/v1/Milan/"
        f"{CHIP_ID.hex()}?blSPL=07&teeSPL=00&snpSPL=14&ucodeSPL=72"
    ]


def test_turin_vcek_fetch_hits_expected_url(turin: Amd) -> None:
    der = turin.vcek_der(CHIP_ID[:8], TURIN_TCB)
    rec = Recorder(httpx.Response(200, content=der))
    with _client(rec) as kds:
        assert kds.vcek(Product.TURIN, CHIP_ID, TURIN_TCB) == der
    assert rec.requests[0].url.path == "/vcek/v1/Turin/0102030405060708"
    assert rec.requests[0].url.query == b"fmcSPL=03&blSPL=01&teeSPL=02&snpSPL=04&ucodeSPL=05"


# --- chains and CRLs ---------------------------------------------------------------------


def test_cert_chain_vcek_and_vlek_paths(milan: Amd) -> None:
    rec = Recorder(
        httpx.Response(200, content=milan.chain_pem()),
        httpx.Response(200, content=milan.chain_pem("SEV-VLEK")),
    )
    with _client(rec) as kds:
        chain = kds.cert_chain(Product.MILAN)
        vlek = kds.cert_chain(Product.MILAN, "vlek")
    assert [r.url.path for r in rec.requests] == [
        "/vcek/v1/Milan/cert_chain",
        "/vlek/v1/Milan/cert_chain",
    ]
    assert "CN=ARK-Milan" in chain.ark.subject.rfc4514_string()
    assert "CN=SEV-Milan" in chain.ask.subject.rfc4514_string()
    assert "CN=SEV-VLEK-Milan" in vlek.intermediate.subject.rfc4514_string()


def test_real_milan_chain_parses(tmp_path: Path) -> None:
    pem = require_shared("testvectors/sev-snp/go-sev-guest-milan/ask_ark.pem").read_bytes()
    rec = Recorder(httpx.Response(200, content=pem))
    with _client(rec, cache=tmp_path) as kds:
        chain = kds.cert_chain("milan")
    assert chain.pem == pem
    assert (tmp_path / "Milan" / "vcek" / "cert_chain.pem").read_bytes() == pem


@pytest.mark.parametrize(
    "body",
    [
        b"<html>maintenance</html>",
        b"",
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    ],
)
def test_garbage_chain_is_not_cached(milan: Amd, tmp_path: Path, body: bytes) -> None:
    rec = Recorder(httpx.Response(200, content=body))
    with _client(rec, cache=tmp_path) as kds, pytest.raises(FetchError, match="unusable"):
        kds.cert_chain(Product.MILAN)
    assert not list(tmp_path.rglob("*.pem"))
    # the next good answer is cached
    rec2 = Recorder(httpx.Response(200, content=milan.chain_pem()))
    with _client(rec2, cache=tmp_path) as kds:
        kds.cert_chain(Product.MILAN)
    assert (tmp_path / "Milan" / "vcek" / "cert_chain.pem").exists()


def test_chain_of_wrong_product_or_shape_is_rejected(milan: Amd, turin: Amd) -> None:
    one = x509.load_pem_x509_certificates(milan.chain_pem())[1].public_bytes(
        serialization.Encoding.PEM
    )
    for body in (turin.chain_pem(), one, milan.chain_pem() + one):
        with _client(Recorder(httpx.Response(200, content=body))) as kds, pytest.raises(FetchError):
            kds.cert_chain(Product.MILAN)


def test_vcek_for_other_tcb_is_rejected_and_not_cached(milan: Amd, tmp_path: Path) -> None:
    other = TcbVersion(bootloader=7, tee=0, snp=15, microcode=72)
    rec = Recorder(httpx.Response(200, content=milan.vcek_der(CHIP_ID, other)))
    with _client(rec, cache=tmp_path) as kds, pytest.raises(FetchError, match="TCB"):
        kds.vcek(Product.MILAN, CHIP_ID, MILAN_TCB)
    other_chip = bytes(reversed(CHIP_ID))
    rec = Recorder(httpx.Response(200, content=milan.vcek_der(other_chip, MILAN_TCB)))
    with _client(rec, cache=tmp_path) as kds, pytest.raises(FetchError, match="hwID"):
        kds.vcek(Product.MILAN, CHIP_ID, MILAN_TCB)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_crl_fetched_cached_and_refreshed_after_next_update(milan: Amd, tmp_path: Path) -> None:
    crl = milan.crl_der()
    rec = Recorder(httpx.Response(200, content=crl))
    with _client(rec, cache=tmp_path) as kds:
        assert kds.crl(Product.MILAN) == crl
    assert rec.requests[0].url.path == "/vcek/v1/Milan/crl"
    with _client(_no_network, cache=tmp_path) as kds:
        assert kds.crl(Product.MILAN) == crl  # cache hit
    later = NOW + dt.timedelta(days=8)
    fresh = milan.crl_der(next_update=later + dt.timedelta(days=7))
    rec = Recorder(httpx.Response(200, content=fresh))
    with _client(rec, cache=tmp_path, clock=later) as kds:
        assert kds.crl(Product.MILAN) == fresh  # stale cache entry refetched
    assert len(rec.requests) == 1
    assert (tmp_path / "Milan" / "vcek" / "crl.der").read_bytes() == fresh


def test_vlek_crl_path_and_issuer_check(milan: Amd, turin: Amd) -> None:
    rec = Recorder(httpx.Response(200, content=milan.crl_der()))
    with _client(rec) as kds:
        kds.crl(Product.MILAN, "vlek")
    assert rec.requests[0].url.path == "/vlek/v1/Milan/crl"
    with (
        _client(Recorder(httpx.Response(200, content=turin.crl_der()))) as kds,
        pytest.raises(FetchError, match="ARK-Milan"),
    ):
        kds.crl(Product.MILAN)


# --- cache -------------------------------------------------------------------------------


def test_vcek_cache_hit_avoids_network(milan: Amd, tmp_path: Path) -> None:
    der = milan.vcek_der(CHIP_ID, MILAN_TCB)
    with _client(Recorder(httpx.Response(200, content=der)), cache=tmp_path) as kds:
        kds.vcek(Product.MILAN, CHIP_ID, MILAN_TCB)
    cached = tmp_path / "Milan" / "vcek" / CHIP_ID.hex() / "bootloader7_tee0_snp14_microcode72.der"
    assert cached.read_bytes() == der
    with _client(_no_network, cache=tmp_path) as kds:
        assert kds.vcek(Product.MILAN, CHIP_ID, MILAN_TCB) == der
    # a different TCB is a different key: a miss
    other = TcbVersion(bootloader=8, tee=0, snp=14, microcode=72)
    with _client(_no_network, cache=tmp_path) as kds, pytest.raises(AssertionError):
        kds.vcek(Product.MILAN, CHIP_ID, other)
    assert not [p.name for p in cached.parent.iterdir() if p.name.startswith(".tmp-")]


def test_chain_cache_hit_avoids_network(milan: Amd, tmp_path: Path) -> None:
    pem = milan.chain_pem()
    with _client(Recorder(httpx.Response(200, content=pem)), cache=tmp_path) as kds:
        kds.cert_chain(Product.MILAN)
    with _client(_no_network, cache=tmp_path) as kds:
        assert kds.cert_chain(Product.MILAN).pem == pem


def test_damaged_or_expired_cache_entries_are_refetched(milan: Amd, tmp_path: Path) -> None:
    path = tmp_path / "Milan" / "vcek" / "cert_chain.pem"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"damaged")
    good = milan.chain_pem()
    rec = Recorder(httpx.Response(200, content=good))
    with _client(rec, cache=tmp_path) as kds:
        kds.cert_chain(Product.MILAN)
    assert path.read_bytes() == good
    # an expired VCEK in the cache is replaced
    short = milan.vcek_der(CHIP_ID, MILAN_TCB, not_after=NOW + dt.timedelta(days=1))
    with _client(Recorder(httpx.Response(200, content=short)), cache=tmp_path) as kds:
        kds.vcek(Product.MILAN, CHIP_ID, MILAN_TCB)
    later = NOW + dt.timedelta(days=2)
    renewed = milan.vcek_der(CHIP_ID, MILAN_TCB, not_after=later + dt.timedelta(days=365))
    rec = Recorder(httpx.Response(200, content=renewed))
    with _client(rec, cache=tmp_path, clock=later) as kds:
        assert kds.vcek(Product.MILAN, CHIP_ID, MILAN_TCB) == renewed
    assert len(rec.requests) == 1


def test_world_writable_cache_dir_is_refused(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    try:
        with pytest.raises(MalformedError, match="world-writable"):
            KdsClient(transport=httpx.MockTransport(_no_network), cache_dir=tmp_path)
    finally:
        os.chmod(tmp_path, 0o700)


# --- rate limits, outages -----------------------------------------------------------------


def test_429_with_retry_after_seconds_then_success(milan: Amd) -> None:
    pem = milan.chain_pem()
    sleeps: list[float] = []
    rec = Recorder(
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(429, headers={"Retry-After": "3"}),
        httpx.Response(200, content=pem),
    )
    with _client(rec, sleeps=sleeps) as kds:
        assert kds.cert_chain(Product.MILAN).pem == pem
    assert sleeps == [7.0, 3.0]


def test_429_with_http_date_retry_after(milan: Amd) -> None:
    sleeps: list[float] = []
    when = (NOW + dt.timedelta(seconds=42)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    rec = Recorder(
        httpx.Response(429, headers={"Retry-After": when}),
        httpx.Response(200, content=milan.chain_pem()),
    )
    with _client(rec, sleeps=sleeps) as kds:
        kds.cert_chain(Product.MILAN)
    assert sleeps == [42.0]


def test_429_exhausted_raises_rate_limited() -> None:
    sleeps: list[float] = []
    rec = Recorder(*[httpx.Response(429, headers={"Retry-After": "5"}) for _ in range(3)])
    with (
        _client(rec, sleeps=sleeps, retry=RetryPolicy(attempts=3)) as kds,
        pytest.raises(RateLimitedError) as exc,
    ):
        kds.vcek(Product.MILAN, CHIP_ID, MILAN_TCB)
    assert exc.value.retry_after == 5.0
    assert sleeps == [5.0, 5.0]
    assert len(rec.requests) == 3
    assert isinstance(exc.value, FetchError)


def test_429_without_retry_after_backs_off() -> None:
    sleeps: list[float] = []
    rec = Recorder(*[httpx.Response(429) for _ in range(4)])
    with _client(rec, sleeps=sleeps) as kds, pytest.raises(RateLimitedError) as exc:
        kds.crl(Product.GENOA)
    assert exc.value.retry_after is None
    assert sleeps == [1.0, 2.0, 4.0]


def test_429_asking_too_long_a_wait_stops_at_once() -> None:
    sleeps: list[float] = []
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "3600"}))
    with (
        _client(rec, sleeps=sleeps, retry=RetryPolicy(max_wait=60)) as kds,
        pytest.raises(RateLimitedError, match="3600") as exc,
    ):
        kds.cert_chain(Product.MILAN)
    assert exc.value.retry_after == 3600.0
    assert sleeps == []


def test_503_retries_then_fetch_error() -> None:
    sleeps: list[float] = []
    rec = Recorder(*[httpx.Response(503) for _ in range(4)])
    with _client(rec, sleeps=sleeps) as kds, pytest.raises(FetchError, match="HTTP 503") as exc:
        kds.cert_chain(Product.TURIN)
    assert not isinstance(exc.value, RateLimitedError)
    assert "after 4 attempts" in str(exc.value)
    assert sleeps == [1.0, 2.0, 4.0]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(attempts=10, backoff_base=1.0, backoff_cap=5.0)
    assert [policy.backoff(i) for i in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_503_then_success(milan: Amd) -> None:
    rec = Recorder(httpx.Response(502), httpx.Response(200, content=milan.chain_pem()))
    with _client(rec) as kds:
        kds.cert_chain(Product.MILAN)
    assert len(rec.requests) == 2


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("timed out"),
    ],
)
def test_transport_errors_become_fetch_error(error: Exception) -> None:
    sleeps: list[float] = []
    rec = Recorder(*[error for _ in range(2)])
    with (
        _client(rec, sleeps=sleeps, retry=RetryPolicy(attempts=2)) as kds,
        pytest.raises(FetchError, match=type(error).__name__),
    ):
        kds.cert_chain(Product.MILAN)
    assert sleeps == [1.0]


def test_404_says_unknown_and_does_not_retry() -> None:
    rec = Recorder(httpx.Response(404, text="Not Found"))
    with _client(rec) as kds, pytest.raises(FetchError, match="does not know"):
        kds.vcek(Product.MILAN, CHIP_ID, MILAN_TCB)
    assert len(rec.requests) == 1


def test_other_4xx_fails_at_once() -> None:
    rec = Recorder(httpx.Response(400, text="bad hwid"))
    with _client(rec) as kds, pytest.raises(FetchError, match=r"HTTP 400.*bad hwid"):
        kds.vcek(Product.MILAN, CHIP_ID, MILAN_TCB)
    assert len(rec.requests) == 1


def test_oversized_body_is_refused() -> None:
    rec = Recorder(httpx.Response(200, content=b"x" * ((1 << 20) + 1)))
    with _client(rec) as kds, pytest.raises(FetchError, match="larger than"):
        kds.cert_chain(Product.MILAN)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("120", 120.0),
        ("Sun, 01 Jun 2025 12:01:00 GMT", 60.0),
        ("Sun, 01 Jun 2025 11:00:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_retry_after_parsing(header: str | None, seconds: float | None) -> None:
    assert _retry_after(header, NOW) == seconds


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(MalformedError):
        KdsClient("ftp://kds.example")


# --- real vectors (VCEK serial 0: the warning is handled locally) ----------------------------


def test_real_milan_vcek_through_client() -> None:
    der = require_shared("testvectors/sev-snp/go-sev-guest-milan/vcek.der").read_bytes()
    cert = load_vcek_der(der)  # serial 0: must not warn (pytest turns warnings into errors)
    hw = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(OID.HW_ID)).value
    assert isinstance(hw, x509.UnrecognizedExtension)
    tcb = TcbVersion(bootloader=2, tee=0, snp=5, microcode=68)
    rec = Recorder(httpx.Response(200, content=der))
    clock = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with _client(rec, clock=clock) as kds:
        assert kds.vcek(Product.MILAN, hw.value, tcb) == der
    assert rec.requests[0].url.query == b"blSPL=02&teeSPL=00&snpSPL=05&ucodeSPL=68"


def test_real_turin_vcek_through_client() -> None:
    der = require_shared("testvectors/sev-snp/virtee-turin/vcek.der").read_bytes()
    tcb = TcbVersion(bootloader=0, tee=0, snp=0, microcode=9, fmc=0)
    rec = Recorder(httpx.Response(200, content=der))
    with _client(rec, clock=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) as kds:
        kds.vcek(Product.TURIN, bytes.fromhex("1e550a8ee5cf9f4d") + bytes(56), tcb)
    assert str(rec.requests[0].url) == (
        "https://kdsintf.amd.com/vcek/v1/Turin/1e550a8ee5cf9f4d"
        "?fmcSPL=00&blSPL=00&teeSPL=00&snpSPL=00&ucodeSPL=09"
    )


def test_load_vcek_der_rejects_garbage() -> None:
    with pytest.raises(MalformedError):
        load_vcek_der(b"\x30\x03\x02\x01\x00")


# --- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_transport(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], None]:
    def install(handler: Handler) -> None:
        monkeypatch.setattr(_kds_cli, "_transport_override", httpx.MockTransport(handler))

    return install


def test_cli_fetch_chain_to_file(
    milan: Amd, tmp_path: Path, cli_transport: Callable[[Handler], None]
) -> None:
    pem = milan.chain_pem()
    rec = Recorder(httpx.Response(200, content=pem))
    cli_transport(rec)
    out = tmp_path / "chain.pem"
    assert main(["snp", "fetch", "chain", "--product", "milan", "--out", str(out)]) == 0
    assert out.read_bytes() == pem
    assert rec.requests[0].url.path == "/vcek/v1/Milan/cert_chain"


def test_cli_fetch_vcek_by_chip_and_tcb(
    milan: Amd, tmp_path: Path, cli_transport: Callable[[Handler], None]
) -> None:
    der = milan.vcek_der(CHIP_ID, MILAN_TCB)
    rec = Recorder(httpx.Response(200, content=der))
    cli_transport(rec)
    out = tmp_path / "vcek.pem"
    argv = ["snp", "fetch", "vcek", "--product", "Milan", "--chip-id", CHIP_ID.hex()]
    argv += ["--tcb", "bl=7,tee=0,snp=0xe,ucode=72", "--pem", "--out", str(out)]
    argv += ["--kds-url", "https://kds.mirror.example/", "--cache", str(tmp_path / "c")]
    assert main(argv) == 0
    assert (
        x509.load_pem_x509_certificate(out.read_bytes()).public_bytes(serialization.Encoding.DER)
        == der
    )
    assert str(rec.requests[0].url).startswith("https://kds.mirror.example/vcek/v1/Milan/")


def test_cli_fetch_vcek_from_real_report(
    tmp_path: Path, cli_transport: Callable[[Handler], None]
) -> None:
    report = require_shared("testvectors/sev-snp/go-sev-guest-milan/attestation.bin")
    rec = Recorder(httpx.Response(503))
    cli_transport(rec)
    argv = ["snp", "fetch", "vcek", "--report", str(report), "--product", "Milan"]
    assert main([*argv, "--attempts", "1"]) == 5
    url = str(rec.requests[0].url)
    assert "/vcek/v1/Milan/" in url
    assert url.endswith("?blSPL=02&teeSPL=00&snpSPL=05&ucodeSPL=68")


def test_cli_crl_to_stdout(
    milan: Amd, cli_transport: Callable[[Handler], None], capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    der = milan.crl_der()
    cli_transport(Recorder(httpx.Response(200, content=der)))
    assert main(["snp", "fetch", "crl", "--product", "Milan"]) == 0
    assert capfdbinary.readouterr().out == der


@pytest.mark.parametrize(
    "argv",
    [
        ["snp", "fetch", "chain", "--product", "Rome"],
        ["snp", "fetch", "vcek", "--product", "Milan", "--chip-id", "zz", "--tcb", "bl=1"],
        ["snp", "fetch", "vcek", "--product", "Milan", "--chip-id", "00" * 64],
        [
            "snp",
            "fetch",
            "vcek",
            "--product",
            "Turin",
            "--chip-id",
            "11" * 8,
            "--tcb",
            "bl=1,tee=0,snp=0,ucode=1",
        ],
        ["snp", "fetch"],
    ],
)
def test_cli_bad_input_exits_2(argv: list[str], cli_transport: Callable[[Handler], None]) -> None:
    cli_transport(_no_network)
    assert main(argv) == 2


def test_cli_rate_limited_exits_5(cli_transport: Callable[[Handler], None]) -> None:
    cli_transport(Recorder(httpx.Response(429, headers={"Retry-After": "9999"})))
    assert main(["snp", "fetch", "chain", "--product", "Genoa"]) == 5


def test_tcb_spec_parsing() -> None:
    assert _kds_cli.parse_tcb_spec("bl=7, tee=0,snp=0x0e,ucode=72,fmc=1") == {
        "bootloader": 7,
        "tee": 0,
        "snp": 14,
        "microcode": 72,
        "fmc": 1,
    }
    for bad in ("bl=1,tee=0,snp=0", "bl=1,bl=2,tee=0,snp=0,ucode=0", "x=1", "bl=one"):
        with pytest.raises(MalformedError):
            _kds_cli.parse_tcb_spec(bad)
