"""AMD SEV-SNP certificate chains: ARK pins, link-by-link chain checks, VCEK/VLEK extensions.

Specification: "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
Specification" (AMD pub. 57230), section 2 ("Certificate chains", the VCEK and VLEK
certificate tables) and section 3 (KDS). The chains are::

    ARK (RSA-4096, self-signed) -> ASK  (RSA-4096) -> VCEK (EC P-384)
    ARK (RSA-4096, self-signed) -> ASVK (RSA-4096) -> VLEK (EC P-384)

every signature RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt. AMD's
certificates do not suit a generic X.509 path builder (zero serial numbers, no
key-usage on the leaf, critical PSS parameters), so the chain is checked link by link.

Checklist of :func:`verify_chain` (numbers are referred to from ``attestation._verify``):

C1. The leaf names itself: subject CN ``SEV-VCEK`` (VCEK) or ``SEV-VLEK`` (VLEK); its
    productName extension (OID 1.3.6.1.4.1.3704.1.2) names the product; when the
    caller expects a product, they must agree. Key: EC P-384.
C2. The intermediate is the supplied certificate whose subject equals the leaf's issuer;
    its CN is ``SEV-<Product>`` (ASK, for a VCEK) or ``SEV-VLEK-<Product>`` (ASVK, for
    a VLEK). Key: RSA-4096; basicConstraints CA; keyUsage keyCertSign.
C3. The ARK is the certificate (supplied, or held by the trusted roots) whose subject
    equals the intermediate's issuer; its CN is ``ARK-<Product>``; the SHA-256 of its
    SubjectPublicKeyInfo DER must be a pin of the trusted roots for that product.
    Key: RSA-4096; self-issued; basicConstraints CA; keyUsage keyCertSign.
C4. Signatures, each with the algorithm identifier checked to be RSASSA-PSS with
    SHA-384 / MGF1-SHA-384 / salt 48 / trailer 1 (outer and TBS copies equal) and then
    verified with exactly those parameters: ARK by itself, intermediate by the ARK,
    leaf by the intermediate.
C5. Validity: the caller's reference time lies in every certificate's validity window.
C6. Optional CRL (KDS ``/crl``): issued and PSS-signed by the ARK, current at the
    reference time, and the intermediate's serial number is not listed.

Leaf extensions (57230, "VCEK Certificate Extensions" / "VLEK Certificate
Extensions"): structVersion, productName, blSPL, teeSPL, snpSPL, spl_4..spl_7,
ucodeSPL, fmcSPL (Turin), hwID (VCEK only: 64 bytes on Milan/Genoa, 8 bytes on
Turin), csp_id (VLEK only). SPLs are DER INTEGERs; productName and csp_id DER
strings; hwID is the raw chip id bytes (AMD omits the OCTET STRING tag).

Trusted roots
-------------
By default (:meth:`TrustedRoots.amd`) the ARKs of Milan, Genoa and Turin are trusted
by the SHA-256 of their SubjectPublicKeyInfo (constants below); the ARK certificate
itself must then come with the chain (AMD's ``cert_chain`` holds ASK and ARK).

:meth:`TrustedRoots.from_dir` *replaces* those pins with explicitly configured roots
(the simulated platform's). Directory layout::

    DIR/<product>/ark.pem     the root (required; <product> = milan, genoa or turin)
    DIR/<product>/ask.pem     optional ASK  (a chain fallback; still verified)
    DIR/<product>/asvk.pem    optional ASVK (a chain fallback; still verified)

Only the ARKs are trust anchors; the optional intermediates are merely convenient
copies, verified like any supplied certificate. Certificates must use the AMD names
above (``ARK-Milan``, ``SEV-Milan``, ``SEV-VLEK-Milan``, ``SEV-VCEK``, ``SEV-VLEK``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from attestation._errors import MalformedError, VerificationError
from attestation._types import OID, Product, TcbVersion

__all__ = [
    "AMD_ARK_SPKI_SHA256",
    "EndorsementExtensions",
    "KeyKind",
    "TrustedRoots",
    "VerifiedChain",
    "load_certificate",
    "load_certificates",
    "load_crl",
    "parse_endorsement_extensions",
    "spki_sha256",
    "verify_chain",
]

AMD_ARK_SPKI_SHA256: dict[Product, str] = {
    Product.MILAN: "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9",
    Product.GENOA: "429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831",
    Product.TURIN: "4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08",
}
"""SHA-256 of the DER SubjectPublicKeyInfo of AMD's ARK per product (KDS ``cert_chain``)."""

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_SERIAL_WARNING = r"Parsed a serial number which wasn't positive"


class KeyKind(enum.Enum):
    """Which endorsement key signs reports: chip-unique VCEK or CSP-loaded VLEK."""

    VCEK = "vcek"
    VLEK = "vlek"


# -- loading -----------------------------------------------------------------------


def _load_one_der(der: bytes) -> x509.Certificate:
    # AMD's VCEKs carry serial number 0, which `cryptography` reports with a
    # CryptographyDeprecationWarning; tolerate exactly that warning, only here.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning
        )
        try:
            return x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise MalformedError(f"not a DER X.509 certificate: {exc}") from None


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in ``data``: one DER certificate, or one or more PEM blocks."""
    if not isinstance(data, bytes):
        raise MalformedError("certificate data must be bytes")
    if b"-----BEGIN" not in data:
        return [_load_one_der(data)]
    ders: list[bytes] = []
    text = data.decode("ascii", errors="replace")
    for block in text.split("-----BEGIN CERTIFICATE-----")[1:]:
        body, sep, _ = block.partition("-----END CERTIFICATE-----")
        if not sep:
            raise MalformedError("PEM certificate block without END line")
        try:
            ders.append(base64.b64decode("".join(body.split()), validate=True))
        except binascii.Error as exc:
            raise MalformedError(f"bad base64 in PEM certificate: {exc}") from None
    if not ders:
        raise MalformedError("no PEM CERTIFICATE block found")
    return [_load_one_der(d) for d in ders]


def load_certificate(data: bytes) -> x509.Certificate:
    """Exactly one certificate, DER or PEM."""
    certs = load_certificates(data)
    if len(certs) != 1:
        raise MalformedError(f"expected one certificate, found {len(certs)}")
    return certs[0]


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL, DER or PEM (the KDS serves DER)."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise MalformedError(f"not an X.509 CRL: {exc}") from None


def spki_sha256(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER SubjectPublicKeyInfo (the pin format)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


# -- trusted roots -----------------------------------------------------------------


def _common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        return ""
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _product_of_ark(cert: x509.Certificate) -> Product:
    cn = _common_name(cert.subject)
    if not cn.startswith("ARK-"):
        raise MalformedError(f"root certificate CN {cn!r} is not ARK-<Product>")
    return Product.parse(cn[4:])


@dataclass(frozen=True)
class TrustedRoots:
    """The trust anchors: per-product SPKI pins, plus ARK certificates when known.

    ``amd`` is true only for :meth:`amd` (AMD's real roots); results carry it so a
    relying party can tell real from explicitly configured (e.g. simulated) roots.
    """

    pins: frozenset[tuple[Product, str]]
    arks: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    amd: bool = False
    label: str = "custom"

    @classmethod
    def amd_default(cls) -> TrustedRoots:
        """AMD's ARKs for Milan, Genoa and Turin, pinned by SPKI SHA-256."""
        return cls(
            pins=frozenset(AMD_ARK_SPKI_SHA256.items()),
            amd=True,
            label="amd",
        )

    @classmethod
    def from_certificates(
        cls,
        arks: Iterable[x509.Certificate],
        intermediates: Iterable[x509.Certificate] = (),
        label: str = "custom",
    ) -> TrustedRoots:
        """Trust exactly these ARKs (product from their ``ARK-<Product>`` CN)."""
        ark_list = tuple(arks)
        if not ark_list:
            raise MalformedError("no root certificates given")
        pins = frozenset((_product_of_ark(c), spki_sha256(c)) for c in ark_list)
        return cls(pins=pins, arks=ark_list, intermediates=tuple(intermediates), label=label)

    @classmethod
    def from_dir(cls, path: Path) -> TrustedRoots:
        """Load ``DIR/<product>/ark.pem`` (+ optional ``ask.pem``, ``asvk.pem``)."""
        if not path.is_dir():
            raise MalformedError(f"roots directory {path} does not exist")
        arks: list[x509.Certificate] = []
        inter: list[x509.Certificate] = []
        for product in Product:
            sub = path / product.value.lower()
            ark_file = sub / "ark.pem"
            if not ark_file.is_file():
                continue
            ark = load_certificate(ark_file.read_bytes())
            if _product_of_ark(ark) is not product:
                raise MalformedError(f"{ark_file}: CN does not name {product.value}")
            arks.append(ark)
            for name in ("ask.pem", "asvk.pem"):
                if (sub / name).is_file():
                    inter.extend(load_certificates((sub / name).read_bytes()))
        if not arks:
            raise MalformedError(
                f"roots directory {path} holds no <product>/ark.pem "
                "(product = milan, genoa or turin)"
            )
        return cls.from_certificates(arks, inter, label=f"dir:{path.name}")

    def is_pinned(self, product: Product, cert: x509.Certificate) -> bool:
        """Whether ``cert``'s key is a trust anchor for ``product``."""
        return (product, spki_sha256(cert)) in self.pins

    def products(self) -> list[Product]:
        """Products with at least one anchor."""
        return sorted({p for p, _ in self.pins}, key=lambda p: p.value)


# -- DER helpers for the PSS parameter check ----------------------------------------


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, value start, value end) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise MalformedError("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or start + n > len(data):
            raise MalformedError("bad DER length")
        length = int.from_bytes(data[start : start + n], "big")
        start += n
    end = start + length
    if end > len(data):
        raise MalformedError("truncated DER")
    return tag, start, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, value start, value end) of each child in [start, end)."""
    out = []
    pos = start
    while pos < end:
        tag, vs, ve = _tlv(data, pos)
        out.append((tag, pos, vs, ve))
        pos = ve
    if pos != end:
        raise MalformedError("DER children overrun")
    return out


_OID_RSASSA_PSS = bytes.fromhex("06092a864886f70d01010a")
_OID_MGF1 = bytes.fromhex("06092a864886f70d010108")
_OID_SHA384 = bytes.fromhex("0609608648016503040202")
_NULL = bytes.fromhex("0500")


def _is_sha384_alg(der: bytes) -> bool:
    # AlgorithmIdentifier { id-sha384, NULL | absent }
    return der in (b"\x30\x0d" + _OID_SHA384 + _NULL, b"\x30\x0b" + _OID_SHA384)


def _check_pss_algorithm(alg: bytes, what: str) -> None:
    """``alg``: a DER AlgorithmIdentifier; must be RSASSA-PSS SHA-384/MGF1-SHA-384/48/1."""
    tag, vs, ve = _tlv(alg, 0)
    kids = _children(alg, vs, ve)
    if tag != 0x30 or len(kids) != 2 or alg[kids[0][1] : kids[0][3]] != _OID_RSASSA_PSS:
        raise VerificationError(f"{what}: signature algorithm is not RSASSA-PSS")
    ptag, _, pvs, pve = kids[1]
    if ptag != 0x30:
        raise VerificationError(f"{what}: RSASSA-PSS parameters missing")
    seen: dict[int, bytes] = {}
    for ctag, _cs, cvs, cve in _children(alg, pvs, pve):
        seen[ctag] = alg[cvs:cve]
    if set(seen) - {0xA0, 0xA1, 0xA2, 0xA3}:
        raise VerificationError(f"{what}: unexpected RSASSA-PSS parameter")
    if not _is_sha384_alg(seen.get(0xA0, b"")):
        raise VerificationError(f"{what}: PSS hash is not SHA-384")
    mgf = seen.get(0xA1, b"")
    try:
        mtag, mvs, mve = _tlv(mgf, 0)
        mk = _children(mgf, mvs, mve)
        mgf_ok = (
            mtag == 0x30
            and len(mk) == 2
            and mgf[mk[0][1] : mk[0][3]] == _OID_MGF1
            and _is_sha384_alg(mgf[mk[1][1] : mk[1][3]])
        )
    except MalformedError:
        mgf_ok = False
    if not mgf_ok:
        raise VerificationError(f"{what}: PSS mask generation is not MGF1 with SHA-384")
    if seen.get(0xA2) != b"\x02\x01\x30":
        raise VerificationError(f"{what}: PSS salt length is not 48")
    if 0xA3 in seen and seen[0xA3] != b"\x02\x01\x01":
        raise VerificationError(f"{what}: PSS trailer field is not 1")


def _signed_structure_algorithms(der: bytes) -> tuple[bytes, bytes]:
    """(TBS signature AlgorithmIdentifier, outer signatureAlgorithm) of a cert or CRL."""
    tag, vs, ve = _tlv(der, 0)
    outer = _children(der, vs, ve)
    if tag != 0x30 or len(outer) != 3:
        raise MalformedError("not a signed X.509 structure")
    _t, _s, tvs, tve = outer[0]
    tbs = _children(der, tvs, tve)
    # Certificate TBS: [0] version, serial, signature, ...; CRL TBS: version?, signature, ...
    idx = 0
    if tbs and tbs[0][0] == 0xA0:  # certificate version
        idx = 2
    elif tbs and tbs[0][0] == 0x02:  # version INTEGER (CRL v2) or serial
        idx = 1
    inner = tbs[idx]
    return der[inner[1] : inner[3]], der[outer[1][1] : outer[1][3]]


def _check_signature_alg(der: bytes, what: str) -> None:
    inner, outer = _signed_structure_algorithms(der)
    if inner != outer:
        raise VerificationError(f"{what}: TBS and outer signature algorithms differ")
    _check_pss_algorithm(outer, what)


def _verify_pss(issuer: x509.Certificate, signature: bytes, tbs: bytes, what: str) -> None:
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise VerificationError(f"{what}: issuer key is not RSA")
    try:
        key.verify(signature, tbs, _PSS, hashes.SHA384())
    except InvalidSignature:
        raise VerificationError(f"{what}: RSASSA-PSS signature does not verify") from None


def _verify_cert_signature(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    _check_signature_alg(cert.public_bytes(serialization.Encoding.DER), what)
    _verify_pss(issuer, cert.signature, cert.tbs_certificate_bytes, what)


# -- leaf extensions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndorsementExtensions:
    """AMD extensions of a VCEK or VLEK certificate (57230)."""

    product_name: str
    product: Product
    tcb: TcbVersion
    struct_version: int | None = None
    hw_id: bytes | None = None
    csp_id: str | None = None


def _der_uint(value: bytes, name: str) -> int:
    try:
        tag, vs, ve = _tlv(value, 0)
    except MalformedError:
        tag, vs, ve = -1, 0, 0
    if tag != 0x02 or ve != len(value) or not 1 <= ve - vs <= 2:
        raise MalformedError(f"extension {name} is not a small DER INTEGER: {value.hex()}")
    n = int.from_bytes(value[vs:ve], "big", signed=True)
    if not 0 <= n <= 255:
        raise MalformedError(f"extension {name}={n} outside 0..255")
    return n


def _der_string(value: bytes, name: str) -> str:
    try:
        tag, vs, ve = _tlv(value, 0)
    except MalformedError:
        tag, vs, ve = -1, 0, 0
    # IA5String, UTF8String, PrintableString
    if tag not in (0x16, 0x0C, 0x13) or ve != len(value):
        raise MalformedError(f"extension {name} is not a DER string: {value.hex()}")
    try:
        return value[vs:ve].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError(f"extension {name} is not text") from None


def parse_endorsement_extensions(cert: x509.Certificate) -> EndorsementExtensions:
    """Decode the AMD extensions of a VCEK/VLEK; raises MalformedError when malformed."""
    raw: dict[str, bytes] = {}
    for ext in cert.extensions:
        if isinstance(ext.value, x509.UnrecognizedExtension):
            raw[ext.oid.dotted_string] = ext.value.value
    if OID.PRODUCT_NAME not in raw:
        raise MalformedError("certificate has no AMD productName extension")
    product_name = _der_string(raw[OID.PRODUCT_NAME], "productName")
    product = Product.parse(product_name)

    def spl(oid: str, name: str) -> int:
        if oid not in raw:
            raise MalformedError(f"certificate has no {name} extension ({oid})")
        return _der_uint(raw[oid], name)

    fmc = spl(OID.FMC_SPL, "fmcSPL") if product.has_fmc else None
    if not product.has_fmc and OID.FMC_SPL in raw:
        raise MalformedError(f"a {product.value} certificate has no fmcSPL extension")
    tcb = TcbVersion(
        bootloader=spl(OID.BL_SPL, "blSPL"),
        tee=spl(OID.TEE_SPL, "teeSPL"),
        snp=spl(OID.SNP_SPL, "snpSPL"),
        microcode=spl(OID.UCODE_SPL, "ucodeSPL"),
        fmc=fmc,
    )
    struct_version = (
        _der_uint(raw[OID.STRUCT_VERSION], "structVersion") if OID.STRUCT_VERSION in raw else None
    )
    hw_id: bytes | None = None
    if OID.HW_ID in raw:
        hw_id = raw[OID.HW_ID]
        expected = (8, 64) if product is Product.TURIN else (64,)
        if len(hw_id) not in expected:
            # tolerate an OCTET STRING wrapper, should AMD add the tag
            try:
                tag, vs, ve = _tlv(hw_id, 0)
            except MalformedError:
                tag, vs, ve = -1, 0, 0
            if tag == 0x04 and ve == len(hw_id) and ve - vs in expected:
                hw_id = hw_id[vs:ve]
            else:
                raise MalformedError(
                    f"hwID extension has {len(hw_id)} bytes; expected "
                    + " or ".join(str(n) for n in expected)
                )
    csp_id = _der_string(raw[OID.CSP_ID], "csp_id") if OID.CSP_ID in raw else None
    return EndorsementExtensions(
        product_name=product_name,
        product=product,
        tcb=tcb,
        struct_version=struct_version,
        hw_id=hw_id,
        csp_id=csp_id,
    )


# -- the chain ---------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedChain:
    """A chain that passed C1-C6."""

    product: Product
    key_kind: KeyKind
    leaf: x509.Certificate
    intermediate: x509.Certificate
    ark: x509.Certificate
    extensions: EndorsementExtensions
    amd_root: bool
    crl_checked: bool = False
    root_pin: str = field(default="")


def _check_rsa4096(cert: x509.Certificate, what: str) -> None:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != 4096:
        raise VerificationError(f"{what}: key is not RSA-4096")


def _check_ca(cert: x509.Certificate, what: str) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise VerificationError(f"{what}: missing {exc.oid._name} extension") from None
    if not bc.ca or not ku.key_cert_sign:
        raise VerificationError(f"{what}: not a CA certificate (basicConstraints/keyUsage)")


def _check_validity(cert: x509.Certificate, at: datetime, what: str) -> None:
    if at < cert.not_valid_before_utc:
        raise VerificationError(
            f"{what}: not yet valid at {at.isoformat()} "
            f"(valid from {cert.not_valid_before_utc.isoformat()})"
        )
    if at > cert.not_valid_after_utc:
        raise VerificationError(
            f"{what}: expired at {at.isoformat()} "
            f"(valid until {cert.not_valid_after_utc.isoformat()})"
        )


def _require_aware(at: datetime) -> None:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("the reference time must be a timezone-aware datetime")


def verify_chain(
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    roots: TrustedRoots,
    at: datetime,
    *,
    product: Product | None = None,
    crl: x509.CertificateRevocationList | None = None,
) -> VerifiedChain:
    """Check the chain ARK -> ASK/ASVK -> VCEK/VLEK (checklist C1-C6 in the module doc).

    ``chain``: the other certificates as supplied (e.g. KDS ``cert_chain``: ASK, ARK);
    ``at``: the reference time (timezone-aware); ``product``: the expected product, if
    known. Raises :class:`VerificationError` (not authentic) or :class:`MalformedError`.
    """
    _require_aware(at)
    # C1: the leaf
    cn = _common_name(leaf.subject)
    if cn == "SEV-VCEK":
        kind = KeyKind.VCEK
    elif cn == "SEV-VLEK":
        kind = KeyKind.VLEK
    else:
        raise VerificationError(f"leaf CN {cn!r} is neither SEV-VCEK nor SEV-VLEK")
    ext = parse_endorsement_extensions(leaf)
    if product is not None and ext.product is not product:
        raise VerificationError(
            f"{kind.name} is for {ext.product.value} ({ext.product_name!r}), "
            f"not the expected {product.value}"
        )
    prod = ext.product
    if kind is KeyKind.VCEK and (ext.hw_id is None or ext.csp_id is not None):
        raise VerificationError("a VCEK must carry hwID and no csp_id")
    if kind is KeyKind.VLEK and (ext.hw_id is not None or ext.csp_id is None):
        raise VerificationError("a VLEK must carry csp_id and no hwID")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise VerificationError(f"{kind.name}: key is not EC P-384")

    # C2: the intermediate
    inter_role = "ASK" if kind is KeyKind.VCEK else "ASVK"
    inter_cn = f"SEV-{prod.value}" if kind is KeyKind.VCEK else f"SEV-VLEK-{prod.value}"
    candidates = [c for c in (*chain, *roots.intermediates) if c.subject == leaf.issuer]
    if not candidates:
        raise VerificationError(
            f"no {inter_role} in the chain matches the {kind.name} issuer "
            f"{leaf.issuer.rfc4514_string()!r}"
        )
    inter = candidates[0]
    if _common_name(inter.subject) != inter_cn:
        raise VerificationError(
            f"{inter_role} CN is {_common_name(inter.subject)!r}, expected {inter_cn!r}"
        )
    _check_rsa4096(inter, inter_role)
    _check_ca(inter, inter_role)

    # C3: the root, by pin
    ark_cn = f"ARK-{prod.value}"
    arks = [c for c in (*chain, *roots.arks) if c.subject == inter.issuer]
    if not arks:
        raise VerificationError(
            f"no ARK matches the {inter_role} issuer {inter.issuer.rfc4514_string()!r} "
            "(supply AMD's cert_chain with --chain)"
        )
    pinned = [c for c in arks if roots.is_pinned(prod, c)]
    if not pinned:
        raise VerificationError(
            f"ARK {_common_name(arks[0].subject)!r} (SPKI SHA-256 {spki_sha256(arks[0])}) "
            f"is not a trusted {prod.value} root ({roots.label} roots)"
        )
    ark = pinned[0]
    if _common_name(ark.subject) != ark_cn or ark.issuer != ark.subject:
        raise VerificationError(f"ARK must be self-issued with CN {ark_cn!r}")
    _check_rsa4096(ark, "ARK")
    _check_ca(ark, "ARK")

    # C4: signatures, link by link
    _verify_cert_signature(ark, ark, "ARK (self-signed)")
    _verify_cert_signature(inter, ark, f"{inter_role} (signed by ARK)")
    _verify_cert_signature(leaf, inter, f"{kind.name} (signed by {inter_role})")

    # C5: validity at the reference time
    _check_validity(ark, at, "ARK")
    _check_validity(inter, at, inter_role)
    _check_validity(leaf, at, kind.name)

    # C6: revocation
    if crl is not None:
        check_crl(crl, ark, inter, at)

    return VerifiedChain(
        product=prod,
        key_kind=kind,
        leaf=leaf,
        intermediate=inter,
        ark=ark,
        extensions=ext,
        amd_root=roots.amd,
        crl_checked=crl is not None,
        root_pin=spki_sha256(ark),
    )


def check_crl(
    crl: x509.CertificateRevocationList,
    ark: x509.Certificate,
    intermediate: x509.Certificate,
    at: datetime,
) -> None:
    """C6: the CRL is the ARK's, current at ``at``, and does not list the intermediate."""
    _require_aware(at)
    if crl.issuer != ark.subject:
        raise VerificationError("CRL is not issued by the ARK")
    _check_signature_alg(crl.public_bytes(serialization.Encoding.DER), "CRL")
    _verify_pss(ark, crl.signature, crl.tbs_certlist_bytes, "CRL (signed by ARK)")
    if at < crl.last_update_utc:
        raise VerificationError(f"CRL is dated after the reference time {at.isoformat()}")
    if crl.next_update_utc is not None and at > crl.next_update_utc:
        raise VerificationError(
            f"CRL is stale at {at.isoformat()} (next update {crl.next_update_utc.isoformat()})"
        )
    if crl.get_revoked_certificate_by_serial_number(intermediate.serial_number) is not None:
        raise VerificationError(
            f"{_common_name(intermediate.subject)} serial {intermediate.serial_number:#x} "
            "is revoked"
        )
