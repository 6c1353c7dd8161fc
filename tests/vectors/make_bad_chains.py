"""Generate the pinned bad-chain vectors under ``tests/vectors/snp_chains/``.

Run from the repository root (takes a few seconds: RSA-4096 key generation)::

    .venv/bin/python tests/vectors/make_bad_chains.py

The outputs are committed; the tests read the committed files, so re-running the
generator (new random keys) is only needed when a case is added. It writes:

- ``roots/milan/ark.pem`` (+ ``ask.pem``, ``asvk.pem``): a test ARK in the ``--roots DIR``
  layout, the only root the tests trust for these vectors;
- ``*.pem``: leaves and chains, good and bad; ``report_*.bin``: Milan version-3 reports
  signed by the good VCEK / VLEK (or by a stranger's key); ``crl_*.der``: CRLs;
- ``manifest.json``: per case, the files to verify and the expected error substring
  (``null`` for the good controls). Reference time for every case: ``AT`` below.

Names follow AMD's (CN ARK-Milan, SEV-Milan, SEV-VLEK-Milan, SEV-VCEK, SEV-VLEK) with the
organization ``PMC2 test vectors``. These are test keys: never trust them elsewhere.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from attestation._abi import AttestationReport, GuestPolicy, PlatformInfo, SigningKey
from attestation._types import OID, Product, TcbVersion

OUT = Path(__file__).resolve().parent / "snp_chains"
AT = "2025-06-01T00:00:00+00:00"
NOT_BEFORE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2034, 1, 1, tzinfo=dt.UTC)
TCB = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
CHIP_ID = bytes(range(64))
PSS48 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PMC2 test vectors"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def der_int(n: int) -> bytes:
    body = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def der_ia5(s: str) -> bytes:
    b = s.encode()
    return bytes([0x16, len(b)]) + b


def ca_cert(
    subject: str,
    issuer: str,
    key: rsa.RSAPrivateKey,
    signer: rsa.RSAPrivateKey,
    *,
    serial: int,
    ca: bool = True,
    algorithm: hashes.SHA256 | hashes.SHA384 | None = None,
    pad: padding.PSS | padding.PKCS1v15 = PSS48,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return b.sign(signer, algorithm or hashes.SHA384(), rsa_padding=pad)


def leaf_cert(
    cn: str,
    issuer: str,
    public_key: ec.EllipticCurvePublicKey,
    signer: rsa.RSAPrivateKey,
    *,
    product_name: str = "Milan-B0",
    tcb: TcbVersion = TCB,
    hw_id: bytes | None = CHIP_ID,
    csp_id: str | None = None,
    not_before: dt.datetime = NOT_BEFORE,
    not_after: dt.datetime = NOT_AFTER,
    algorithm: hashes.SHA256 | hashes.SHA384 | None = None,
    pad: padding.PSS | padding.PKCS1v15 = PSS48,
) -> x509.Certificate:
    exts = [
        (OID.STRUCT_VERSION, der_int(1)),
        (OID.PRODUCT_NAME, der_ia5(product_name)),
        (OID.BL_SPL, der_int(tcb.bootloader)),
        (OID.TEE_SPL, der_int(tcb.tee)),
        (OID.SNP_SPL, der_int(tcb.snp)),
        (OID.SPL_4, der_int(0)),
        (OID.SPL_5, der_int(0)),
        (OID.SPL_6, der_int(0)),
        (OID.SPL_7, der_int(0)),
        (OID.UCODE_SPL, der_int(tcb.microcode)),
    ]
    if hw_id is not None:
        exts.append((OID.HW_ID, hw_id))
    if csp_id is not None:
        exts.append((OID.CSP_ID, der_ia5(csp_id)))
    b = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(issuer))
        .public_key(public_key)
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for oid, value in exts:
        b = b.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
    return b.sign(signer, algorithm or hashes.SHA384(), rsa_padding=pad)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def signed_report(key: ec.EllipticCurvePrivateKey, signing_key: SigningKey) -> bytes:
    report = AttestationReport(
        product=Product.MILAN,
        version=3,
        current_tcb=TCB,
        reported_tcb=TCB,
        committed_tcb=TCB,
        launch_tcb=TCB,
        policy=GuestPolicy(abi_major=1, abi_minor=55, smt=True),
        platform_info=PlatformInfo(smt_enabled=True),
        signing_key=signing_key,
        measurement=bytes(48),
        report_data=b"\x42" * 64,
        cpuid_fam_id=0x19,
        cpuid_mod_id=0x01,
        cpuid_step=0x01,
        chip_id=CHIP_ID if signing_key is SigningKey.VCEK else bytes(64),
    )
    der = key.sign(report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    return report.with_signature(r, s).to_bytes()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "roots" / "milan").mkdir(parents=True, exist_ok=True)

    def rsa4096() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)

    ark_key, ask_key, asvk_key, rogue_key = rsa4096(), rsa4096(), rsa4096(), rsa4096()
    small_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    vlek_key = ec.generate_private_key(ec.SECP384R1())
    stranger_key = ec.generate_private_key(ec.SECP384R1())
    p256_key = ec.generate_private_key(ec.SECP256R1())

    ark = ca_cert("ARK-Milan", "ARK-Milan", ark_key, ark_key, serial=0x10000)
    ask = ca_cert("SEV-Milan", "ARK-Milan", ask_key, ark_key, serial=0x10001)
    asvk = ca_cert("SEV-VLEK-Milan", "ARK-Milan", asvk_key, ark_key, serial=0x10002)
    rogue_ark = ca_cert("ARK-Milan", "ARK-Milan", rogue_key, rogue_key, serial=0x10000)
    rogue_ask = ca_cert("SEV-Milan", "ARK-Milan", ask_key, rogue_key, serial=0x10001)
    ask_not_ca = ca_cert("SEV-Milan", "ARK-Milan", ask_key, ark_key, serial=0x10001, ca=False)
    ask_2048 = ca_cert("SEV-Milan", "ARK-Milan", small_key, ark_key, serial=0x10001)
    ark_sha256 = ca_cert(
        "ARK-Milan",
        "ARK-Milan",
        ark_key,
        ark_key,
        serial=0x10000,
        algorithm=hashes.SHA256(),
        pad=padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
    )

    vcek = leaf_cert("SEV-VCEK", "SEV-Milan", vcek_key.public_key(), ask_key)
    vlek = leaf_cert(
        "SEV-VLEK", "SEV-VLEK-Milan", vlek_key.public_key(), asvk_key, hw_id=None, csp_id="test-csp"
    )
    files: dict[str, bytes] = {
        "roots/milan/ark.pem": pem(ark),
        "roots/milan/ask.pem": pem(ask),
        "roots/milan/asvk.pem": pem(asvk),
        "chain.pem": pem(ask, ark),
        "vlek_chain.pem": pem(asvk, ark),
        "rogue_chain.pem": pem(rogue_ask, rogue_ark),
        "ask_by_rogue_chain.pem": pem(rogue_ask, ark),
        "ask_not_ca_chain.pem": pem(ask_not_ca, ark),
        "ask_rsa2048_chain.pem": pem(ask_2048, ark),
        "ark_sha256_chain.pem": pem(ask, ark_sha256),
        "ask_only.pem": pem(ask),
        "vcek.pem": pem(vcek),
        "vlek.pem": pem(vlek),
        "vcek_salt32.pem": pem(
            leaf_cert(
                "SEV-VCEK",
                "SEV-Milan",
                vcek_key.public_key(),
                ask_key,
                pad=padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=32),
            )
        ),
        "vcek_pkcs1.pem": pem(
            leaf_cert(
                "SEV-VCEK", "SEV-Milan", vcek_key.public_key(), ask_key, pad=padding.PKCS1v15()
            )
        ),
        "vcek_p256.pem": pem(leaf_cert("SEV-VCEK", "SEV-Milan", p256_key.public_key(), ask_key)),
        "vcek_expired.pem": pem(
            leaf_cert(
                "SEV-VCEK",
                "SEV-Milan",
                vcek_key.public_key(),
                ask_key,
                not_after=dt.datetime(2024, 12, 31, tzinfo=dt.UTC),
            )
        ),
        "vcek_not_yet_valid.pem": pem(
            leaf_cert(
                "SEV-VCEK",
                "SEV-Milan",
                vcek_key.public_key(),
                ask_key,
                not_before=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            )
        ),
        "vcek_wrong_issuer.pem": pem(
            leaf_cert("SEV-VCEK", "SEV-Genoa", vcek_key.public_key(), ask_key)
        ),
        "vcek_by_ark.pem": pem(leaf_cert("SEV-VCEK", "SEV-Milan", vcek_key.public_key(), ark_key)),
        "vcek_genoa.pem": pem(
            leaf_cert("SEV-VCEK", "SEV-Milan", vcek_key.public_key(), ask_key, product_name="Genoa")
        ),
        "vcek_tcb.pem": pem(
            leaf_cert(
                "SEV-VCEK",
                "SEV-Milan",
                vcek_key.public_key(),
                ask_key,
                tcb=TcbVersion(bootloader=3, tee=0, snp=9, microcode=115),
            )
        ),
        "vcek_chipid.pem": pem(
            leaf_cert("SEV-VCEK", "SEV-Milan", vcek_key.public_key(), ask_key, hw_id=b"\xee" * 64)
        ),
        "vcek_cn.pem": pem(leaf_cert("SEV-XYZ", "SEV-Milan", vcek_key.public_key(), ask_key)),
        "vlek_with_hwid.pem": pem(
            leaf_cert(
                "SEV-VLEK",
                "SEV-VLEK-Milan",
                vlek_key.public_key(),
                asvk_key,
                csp_id="test-csp",
            )
        ),
        "report_vcek.bin": signed_report(vcek_key, SigningKey.VCEK),
        "report_vlek.bin": signed_report(vlek_key, SigningKey.VLEK),
        "report_stranger.bin": signed_report(stranger_key, SigningKey.VCEK),
    }
    # a leaf whose signature bytes are corrupted (last signature byte flipped)
    good_der = bytearray(vcek.public_bytes(serialization.Encoding.DER))
    good_der[-1] ^= 0x01
    files["vcek_badsig.der"] = bytes(good_der)

    def crl(revoked: list[int], signer: rsa.RSAPrivateKey) -> bytes:
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(name("ARK-Milan"))
            .last_update(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
            .next_update(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        )
        for serial in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
                .build()
            )
        return b.sign(signer, hashes.SHA384(), rsa_padding=PSS48).public_bytes(
            serialization.Encoding.DER
        )

    files["crl_ok.der"] = crl([0x10099], ark_key)
    files["crl_revoked.der"] = crl([0x10001], ark_key)
    files["crl_rogue.der"] = crl([], rogue_key)

    for rel, data in files.items():
        (OUT / rel).write_bytes(data)

    def case(
        leaf: str, chain: str | None, report: str, expect: str | None, crl: str | None = None
    ) -> dict[str, str | None]:
        return {"leaf": leaf, "chain": chain, "report": report, "crl": crl, "expect": expect}

    manifest = {
        "at": AT,
        "roots": "roots",
        "cases": {
            "good_vcek": case("vcek.pem", "chain.pem", "report_vcek.bin", None),
            "good_vcek_roots_only": case("vcek.pem", None, "report_vcek.bin", None),
            "good_vlek": case("vlek.pem", "vlek_chain.pem", "report_vlek.bin", None),
            "good_crl": case("vcek.pem", "chain.pem", "report_vcek.bin", None, "crl_ok.der"),
            "rogue_ark": case("vcek.pem", "rogue_chain.pem", "report_vcek.bin", "ASK (signed"),
            "ask_signed_by_rogue": case(
                "vcek.pem", "ask_by_rogue_chain.pem", "report_vcek.bin", "ASK (signed by ARK)"
            ),
            "ask_not_ca": case(
                "vcek.pem", "ask_not_ca_chain.pem", "report_vcek.bin", "not a CA certificate"
            ),
            "ask_rsa2048": case(
                "vcek.pem", "ask_rsa2048_chain.pem", "report_vcek.bin", "not RSA-4096"
            ),
            "ark_pss_sha256": case(
                "vcek.pem", "ark_sha256_chain.pem", "report_vcek.bin", "hash is not SHA-384"
            ),
            "vcek_bad_signature": case(
                "vcek_badsig.der", "chain.pem", "report_vcek.bin", "does not verify"
            ),
            "vcek_pss_salt32": case(
                "vcek_salt32.pem", "chain.pem", "report_vcek.bin", "salt length is not 48"
            ),
            "vcek_pkcs1v15": case(
                "vcek_pkcs1.pem", "chain.pem", "report_vcek.bin", "is not RSASSA-PSS"
            ),
            "vcek_p256": case("vcek_p256.pem", "chain.pem", "report_vcek.bin", "not EC P-384"),
            "vcek_expired": case("vcek_expired.pem", "chain.pem", "report_vcek.bin", "expired"),
            "vcek_not_yet_valid": case(
                "vcek_not_yet_valid.pem", "chain.pem", "report_vcek.bin", "not yet valid"
            ),
            "vcek_wrong_issuer": case(
                "vcek_wrong_issuer.pem", "chain.pem", "report_vcek.bin", "no ASK"
            ),
            "vcek_signed_by_ark": case(
                "vcek_by_ark.pem", "chain.pem", "report_vcek.bin", "VCEK (signed by ASK)"
            ),
            "vcek_wrong_product": case(
                "vcek_genoa.pem", "chain.pem", "report_vcek.bin", "is for Genoa"
            ),
            "vcek_tcb_mismatch": case(
                "vcek_tcb.pem", "chain.pem", "report_vcek.bin", "REPORTED_TCB"
            ),
            "vcek_chipid_mismatch": case(
                "vcek_chipid.pem", "chain.pem", "report_vcek.bin", "CHIP_ID"
            ),
            "leaf_cn": case("vcek_cn.pem", "chain.pem", "report_vcek.bin", "neither SEV-VCEK"),
            "vlek_with_hwid": case(
                "vlek_with_hwid.pem", "vlek_chain.pem", "report_vlek.bin", "no hwID"
            ),
            "vlek_cert_vcek_report": case(
                "vlek.pem", "vlek_chain.pem", "report_vcek.bin", "SIGNING_KEY says VCEK"
            ),
            "vcek_cert_vlek_report": case(
                "vcek.pem", "chain.pem", "report_vlek.bin", "SIGNING_KEY says VLEK"
            ),
            "report_by_stranger": case(
                "vcek.pem", "chain.pem", "report_stranger.bin", "report signature does not verify"
            ),
            "crl_revoked": case(
                "vcek.pem", "chain.pem", "report_vcek.bin", "is revoked", "crl_revoked.der"
            ),
            "crl_rogue": case(
                "vcek.pem", "chain.pem", "report_vcek.bin", "CRL (signed by ARK)", "crl_rogue.der"
            ),
        },
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(files)} files and {len(manifest['cases'])} cases to {OUT.name}/")


if __name__ == "__main__":
    main()
