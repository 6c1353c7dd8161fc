"""Certificates of the simulated platform: an AMD-like ARK → ASK → VCEK and ARK → ASVK → VLEK.

The shapes follow AMD's real certificates (VCEK specification, AMD pub. 57230, and the
certificates served by AMD's KDS), so that the verifier runs the same code over simulated
and real evidence:

- ARK: RSA-4096, self-signed with RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48); key usage
  keyCertSign + cRLSign (critical), basic constraints CA (critical), subject key id.
- ASK / ASVK: RSA-4096 signed by the ARK (PSS as above); CA with path length 0,
  keyCertSign, subject and authority key ids.
- VCEK / VLEK: EC P-384 signed by the ASK / ASVK (PSS as above), without standard
  extensions, carrying AMD's extensions (arc 1.3.6.1.4.1.3704.1) encoded as AMD encodes
  them: structVersion and the SPLs as DER INTEGERs, productName as a DER IA5String,
  hwID as the raw CHIP_ID bytes (no inner tag; 64 bytes, or the first 8 on Turin),
  CSP_ID (VLEK only, no hwID) as a DER IA5String.

Names are AMD's (``CN=ARK-Milan``, ``CN=SEV-Milan``, ``CN=SEV-VCEK``, ``CN=SEV-VLEK-Milan``,
``CN=SEV-VLEK``, ``OU=Engineering``, ``C=US``, ``L=Santa Clara``, ``ST=CA``) except the
organization, which is ``PMC2 simulated AMD`` so a simulated certificate can never be
mistaken for one of AMD's. The pinned AMD roots reject these chains: the simulated ARK
is trusted only where it is explicitly configured.

Serial numbers are random and non-zero (AMD's VCEKs use serial 0, which ``cryptography``
rejects when building and warns about when parsing).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from attestation._errors import MalformedError
from attestation._types import OID, Product, TcbVersion

__all__ = [
    "SIMULATED_ORGANIZATION",
    "ChipIdentity",
    "amd_pss",
    "der_ia5string",
    "der_uint",
    "derive_endorsement_key",
    "issue_ark",
    "issue_intermediate",
    "issue_vcek",
    "issue_vlek",
    "simulated_crl",
    "spki_sha256",
]

SIMULATED_ORGANIZATION = "PMC2 simulated AMD"
ROOT_VALIDITY = dt.timedelta(days=25 * 365)
LEAF_VALIDITY = dt.timedelta(days=7 * 365)
# Backdate notBefore a little so a certificate is valid at its creation instant on
# machines whose clocks differ slightly.
BACKDATE = dt.timedelta(minutes=5)

# KDS productName per product, as AMD writes it (stepping suffix on Milan and Genoa).
PRODUCT_NAMES = {Product.MILAN: "Milan-B0", Product.GENOA: "Genoa-B1", Product.TURIN: "Turin"}
# structVersion AMD uses: 0 on the Milan/Genoa VCEKs seen, 1 on Turin and on VLEKs.
_STRUCT_VERSION = {Product.MILAN: 0, Product.GENOA: 0, Product.TURIN: 1}
TURIN_HWID_SIZE = 8
_P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
    "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16,
)
CHIP_ID_SIZE = 64


def amd_pss() -> padding.PSS:
    """RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt, as AMD signs."""
    return padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def der_uint(value: int) -> bytes:
    """DER INTEGER of a non-negative integer (minimal, with a leading zero when needed)."""
    if value < 0:
        raise ValueError("negative")
    # bit_length // 8 + 1 bytes: exactly one more byte when the top bit would be set.
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_len(len(body)) + body


def der_ia5string(text: str) -> bytes:
    """DER IA5String."""
    body = text.encode("ascii")
    return b"\x16" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _name(cn: str) -> x509.Name:
    # Same attribute order as AMD's certificates.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIMULATED_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def ark_name(product: Product) -> x509.Name:
    return _name(f"ARK-{product.value}")


def ask_name(product: Product) -> x509.Name:
    return _name(f"SEV-{product.value}")


def asvk_name(product: Product) -> x509.Name:
    return _name(f"SEV-VLEK-{product.value}")


@dataclass(frozen=True, slots=True)
class ChipIdentity:
    """What a VCEK certifies: the product, its CHIP_ID and the reported TCB."""

    product: Product
    chip_id: bytes
    reported_tcb: TcbVersion

    def __post_init__(self) -> None:
        if len(self.chip_id) != CHIP_ID_SIZE:
            raise MalformedError(f"CHIP_ID must be {CHIP_ID_SIZE} bytes")
        if (self.reported_tcb.fmc is not None) != self.product.has_fmc:
            raise MalformedError(f"reported TCB does not fit a {self.product.value} chip")

    @property
    def hwid(self) -> bytes:
        """The hwID extension value: the CHIP_ID, or its first 8 bytes on Turin."""
        if self.product is Product.TURIN:
            return self.chip_id[:TURIN_HWID_SIZE]
        return self.chip_id


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer_key: rsa.RSAPrivateKey,
    now: dt.datetime,
    *,
    path_length: int | None,
    crl_sign: bool,
) -> x509.CertificateBuilder:
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ROOT_VALIDITY)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=crl_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    )
    if key is not issuer_key:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    return b


def issue_ark(product: Product, key: rsa.RSAPrivateKey, now: dt.datetime) -> x509.Certificate:
    """The self-signed simulated ARK."""
    b = _ca_builder(
        ark_name(product), ark_name(product), key, key, now, path_length=None, crl_sign=True
    )
    return b.sign(key, hashes.SHA384(), rsa_padding=amd_pss())


def issue_intermediate(
    product: Product,
    key: rsa.RSAPrivateKey,
    ark_key: rsa.RSAPrivateKey,
    now: dt.datetime,
    *,
    vlek: bool = False,
) -> x509.Certificate:
    """The ASK (``vlek=False``) or the ASVK (``vlek=True``), signed by the ARK."""
    subject = asvk_name(product) if vlek else ask_name(product)
    b = _ca_builder(subject, ark_name(product), key, ark_key, now, path_length=0, crl_sign=False)
    return b.sign(ark_key, hashes.SHA384(), rsa_padding=amd_pss())


def _leaf_builder(
    subject_cn: str,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    *,
    product: Product,
    tcb: TcbVersion,
    struct_version: int,
) -> x509.CertificateBuilder:
    if (tcb.fmc is not None) != product.has_fmc:
        raise MalformedError(f"TCB does not fit a {product.value} chip")
    exts: list[tuple[str, bytes]] = [
        (OID.STRUCT_VERSION, der_uint(struct_version)),
        (OID.PRODUCT_NAME, der_ia5string(PRODUCT_NAMES[product])),
    ]
    if product.has_fmc:
        assert tcb.fmc is not None
        exts.append((OID.FMC_SPL, der_uint(tcb.fmc)))
    # Order as in AMD's certificates: Milan/Genoa put snpSPL after the reserved SPLs
    # 4-7; Turin (no SPL 4) puts it right after teeSPL.
    exts += [(OID.BL_SPL, der_uint(tcb.bootloader)), (OID.TEE_SPL, der_uint(tcb.tee))]
    if product.has_fmc:
        exts.append((OID.SNP_SPL, der_uint(tcb.snp)))
    else:
        exts.append((OID.SPL_4, der_uint(0)))
    exts += [(OID.SPL_5, der_uint(0)), (OID.SPL_6, der_uint(0)), (OID.SPL_7, der_uint(0))]
    if not product.has_fmc:
        exts.append((OID.SNP_SPL, der_uint(tcb.snp)))
    exts.append((OID.UCODE_SPL, der_uint(tcb.microcode)))
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
    )
    for oid, value in exts:
        b = b.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
    return b


def issue_vcek(
    chip: ChipIdentity,
    key: ec.EllipticCurvePrivateKey,
    ask_key: rsa.RSAPrivateKey,
    now: dt.datetime,
) -> x509.Certificate:
    """A VCEK for ``chip`` at its reported TCB, signed by the ASK."""
    b = _leaf_builder(
        "SEV-VCEK",
        ask_name(chip.product),
        key,
        now,
        product=chip.product,
        tcb=chip.reported_tcb,
        struct_version=_STRUCT_VERSION[chip.product],
    )
    b = b.add_extension(
        x509.UnrecognizedExtension(x509.ObjectIdentifier(OID.HW_ID), chip.hwid), critical=False
    )
    return b.sign(ask_key, hashes.SHA384(), rsa_padding=amd_pss())


def issue_vlek(
    product: Product,
    tcb: TcbVersion,
    key: ec.EllipticCurvePrivateKey,
    asvk_key: rsa.RSAPrivateKey,
    now: dt.datetime,
    *,
    csp_id: str,
) -> x509.Certificate:
    """A VLEK for a cloud provider ``csp_id`` at ``tcb``, signed by the ASVK (no hwID)."""
    if not csp_id or not csp_id.isascii():
        raise MalformedError("CSP_ID must be a non-empty ASCII string")
    b = _leaf_builder(
        "SEV-VLEK", asvk_name(product), key, now, product=product, tcb=tcb, struct_version=1
    )
    b = b.add_extension(
        x509.UnrecognizedExtension(x509.ObjectIdentifier(OID.CSP_ID), der_ia5string(csp_id)),
        critical=False,
    )
    return b.sign(asvk_key, hashes.SHA384(), rsa_padding=amd_pss())


def derive_endorsement_key(
    seed: bytes, label: str, product: Product, tcb: TcbVersion
) -> ec.EllipticCurvePrivateKey:
    """A P-384 key derived from a secret seed and the TCB (like the VCEK, one per TCB).

    HKDF-SHA-384 over the seed with ``label``, the product and the TCB_VERSION bytes as
    info; the output is reduced into [1, n-1].
    """
    n = _P384_ORDER
    info = f"pmc2-sim {label} {product.value} ".encode() + tcb.to_bytes(product)
    okm = HKDF(algorithm=hashes.SHA384(), length=64, salt=None, info=info).derive(seed)
    scalar = int.from_bytes(okm, "big") % (n - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP384R1())


def simulated_crl(
    product: Product,
    ark_key: rsa.RSAPrivateKey,
    now: dt.datetime,
    revoked_serials: tuple[int, ...] = (),
    *,
    validity: dt.timedelta = dt.timedelta(days=30),
) -> x509.CertificateRevocationList:
    """A CRL issued by the simulated ARK (PSS), revoking ``revoked_serials``."""
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ark_name(product))
        .last_update(now - BACKDATE)
        .next_update(now + validity)
    )
    for serial in revoked_serials:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - BACKDATE)
            .build()
        )
    return b.sign(ark_key, hashes.SHA384(), rsa_padding=amd_pss())


def spki_sha256(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER SubjectPublicKeyInfo (how roots are pinned)."""
    from cryptography.hazmat.primitives import serialization

    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()
