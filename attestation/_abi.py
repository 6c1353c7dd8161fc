"""The SEV-SNP ATTESTATION_REPORT structure: parse, validate, serialize.

Layout per the SEV Secure Nested Paging Firmware ABI Specification (AMD pub. 56860),
section 7.3 "Attestation", Table 23 "ATTESTATION_REPORT Structure" (offsets in hex)::

    000 VERSION u32          004 GUEST_SVN u32        008 POLICY u64 (Table 9)
    010 FAMILY_ID [16]       020 IMAGE_ID [16]        030 VMPL u32
    034 SIGNATURE_ALGO u32   038 CURRENT_TCB u64      040 PLATFORM_INFO u64 (Table 24)
    048 AUTHOR_KEY_EN bit 0, MASK_CHIP_KEY bit 1, SIGNING_KEY bits 4:2, bits 31:5 MBZ
    04C reserved u32 (MBZ)   050 REPORT_DATA [64]     090 MEASUREMENT [48]
    0C0 HOST_DATA [32]       0E0 ID_KEY_DIGEST [48]   110 AUTHOR_KEY_DIGEST [48]
    140 REPORT_ID [32]       160 REPORT_ID_MA [32]    180 REPORTED_TCB u64
    188 CPUID_FAM_ID u8, 189 CPUID_MOD_ID u8, 18A CPUID_STEP u8 (version 3 and later;
        MBZ in version 2)    18B..19F reserved (MBZ)
    1A0 CHIP_ID [64]         1E0 COMMITTED_TCB u64
    1E8 CURRENT_BUILD u8, 1E9 CURRENT_MINOR u8, 1EA CURRENT_MAJOR u8, 1EB MBZ
    1EC COMMITTED_BUILD u8, 1ED COMMITTED_MINOR u8, 1EE COMMITTED_MAJOR u8, 1EF MBZ
    1F0 LAUNCH_TCB u64
    1F8 LAUNCH_MIT_VECTOR u64, 200 CURRENT_MIT_VECTOR u64 (version 5; MBZ before)
    208..29F reserved (MBZ)  2A0 SIGNATURE [0x200]

The signature covers bytes 0x000-0x29F. With SIGNATURE_ALGO 1 (ECDSA P-384 with
SHA-384, Table 141 "ECDSA P-384 with SHA-384 Signature") the 0x200-byte signature area
holds R at 0x00 and S at 0x48, each a 72-byte little-endian integer; the rest is MBZ.

Supported report versions: 2, 3 and 5. Version 4 and anything else is rejected.

Product (which selects the TCB_VERSION layout, see ``attestation._types``): a version-3
or later report carries the CPU family/model, and the product is inferred from them
(family 19h models 00h-0Fh Milan, 10h-1Fh and A0h-AFh Genoa; family 1Ah models
00h-1Fh Turin). A version-2 report does not, so :meth:`AttestationReport.from_bytes`
requires the caller to pass ``product``; the verifier passes the product named by the
VCEK/VLEK's productName extension (VCEK spec, AMD pub. 57230). When both are present
they must agree.

Parsing is strict and canonical: every must-be-zero range is checked, so
``AttestationReport.from_bytes(b).to_bytes() == b`` for every accepted ``b``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field, replace
from typing import Any

from attestation._errors import MalformedError
from attestation._types import Product, TcbVersion

__all__ = [
    "REPORT_SIZE",
    "SIGNATURE_ALGO_ECDSA_P384_SHA384",
    "SIGNED_SIZE",
    "SUPPORTED_REPORT_VERSIONS",
    "AttestationReport",
    "GuestPolicy",
    "PlatformInfo",
    "SigningKey",
    "product_from_cpuid",
]

REPORT_SIZE = 0x4A0
"""Size of an ATTESTATION_REPORT in bytes."""
SIGNED_SIZE = 0x2A0
"""Bytes 0x000-0x29F are covered by the signature; the signature area starts here."""
SIGNATURE_AREA_SIZE = 0x200
SIG_COMPONENT_SIZE = 72
"""R and S are 72-byte little-endian integers (Table 141)."""
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
SUPPORTED_REPORT_VERSIONS = frozenset({2, 3, 5})


class SigningKey(enum.IntEnum):
    """SIGNING_KEY (report bits 0x48[4:2]): which endorsement key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7

    @property
    def label(self) -> str:
        """Lower-case name, as used in JSON output (``vcek``, ``vlek``, ``none``)."""
        return self.name.lower()


_POLICY_FLAGS: tuple[tuple[str, int], ...] = (
    ("smt", 16),
    ("migrate_ma", 18),
    ("debug", 19),
    ("single_socket", 20),
    ("cxl_allow", 21),
    ("mem_aes_256_xts", 22),
    ("rapl_dis", 23),
    ("ciphertext_hiding", 24),
    ("page_swap_disable", 25),
)
_POLICY_RESERVED_ONE_BIT = 17
_POLICY_KNOWN_MASK = 0xFFFF | (1 << _POLICY_RESERVED_ONE_BIT)
for _name, _bit in _POLICY_FLAGS:
    _POLICY_KNOWN_MASK |= 1 << _bit


@dataclass(frozen=True, slots=True)
class GuestPolicy:
    """The guest POLICY (ABI spec 56860, section 4.3, Table 9 "Guest Policy Structure").

    Bits 7:0 ABI_MINOR, 15:8 ABI_MAJOR, 16 SMT allowed, 17 reserved (must be one),
    18 MIGRATE_MA, 19 DEBUG, 20 SINGLE_SOCKET, 21 CXL_ALLOW, 22 MEM_AES_256_XTS,
    23 RAPL_DIS, 24 CIPHERTEXT_HIDING, 25 PAGE_SWAP_DISABLE, 63:26 must be zero.
    """

    abi_minor: int = 0
    abi_major: int = 0
    smt: bool = False
    migrate_ma: bool = False
    debug: bool = False
    single_socket: bool = False
    cxl_allow: bool = False
    mem_aes_256_xts: bool = False
    rapl_dis: bool = False
    ciphertext_hiding: bool = False
    page_swap_disable: bool = False

    def __post_init__(self) -> None:
        for name in ("abi_minor", "abi_major"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise MalformedError(f"POLICY.{name.upper()}={value} outside 0..255")

    @classmethod
    def from_u64(cls, raw: int) -> GuestPolicy:
        """Decode; rejects bit 17 clear and any set bit in 63:26."""
        if not raw & (1 << _POLICY_RESERVED_ONE_BIT):
            raise MalformedError(f"POLICY {raw:#x}: reserved bit 17 must be one")
        if raw & ~_POLICY_KNOWN_MASK & 0xFFFF_FFFF_FFFF_FFFF:
            raise MalformedError(f"POLICY {raw:#x}: reserved bits 63:26 must be zero")
        flags = {name: bool(raw >> bit & 1) for name, bit in _POLICY_FLAGS}
        return cls(abi_minor=raw & 0xFF, abi_major=raw >> 8 & 0xFF, **flags)

    def to_u64(self) -> int:
        """Encode (bit 17 set)."""
        raw = self.abi_minor | self.abi_major << 8 | 1 << _POLICY_RESERVED_ONE_BIT
        for name, bit in _POLICY_FLAGS:
            if getattr(self, name):
                raw |= 1 << bit
        return raw

    def flags(self) -> dict[str, Any]:
        """Named flags plus ``abi_major``/``abi_minor`` and the ``raw`` value (JSON)."""
        out: dict[str, Any] = {"raw": f"{self.to_u64():#x}"}
        out["abi_major"] = self.abi_major
        out["abi_minor"] = self.abi_minor
        for name, _bit in _POLICY_FLAGS:
            out[name] = bool(getattr(self, name))
        return out


_PLATFORM_FLAGS: tuple[tuple[str, int], ...] = (
    ("smt_enabled", 0),
    ("tsme_enabled", 1),
    ("ecc_enabled", 2),
    ("rapl_disabled", 3),
    ("ciphertext_hiding_enabled", 4),
    ("alias_check_complete", 5),
)
_PLATFORM_KNOWN_MASK = (1 << 6) - 1


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """PLATFORM_INFO (ABI spec 56860, Table 23 note / Table 24 "PLATFORM_INFO Field").

    Bit 0 SMT_EN, 1 TSME_EN, 2 ECC_EN, 3 RAPL_DIS, 4 CIPHERTEXT_HIDING_EN,
    5 ALIAS_CHECK_COMPLETE; any higher bit is unknown to this library and rejected
    (fail closed: a new platform property must be reviewed before it is accepted).
    """

    smt_enabled: bool = False
    tsme_enabled: bool = False
    ecc_enabled: bool = False
    rapl_disabled: bool = False
    ciphertext_hiding_enabled: bool = False
    alias_check_complete: bool = False

    @classmethod
    def from_u64(cls, raw: int) -> PlatformInfo:
        """Decode; rejects unknown bits."""
        if raw & ~_PLATFORM_KNOWN_MASK:
            raise MalformedError(f"PLATFORM_INFO {raw:#x}: unknown bits above bit 5 set")
        return cls(**{name: bool(raw >> bit & 1) for name, bit in _PLATFORM_FLAGS})

    def to_u64(self) -> int:
        """Encode."""
        raw = 0
        for name, bit in _PLATFORM_FLAGS:
            if getattr(self, name):
                raw |= 1 << bit
        return raw

    def flags(self) -> dict[str, Any]:
        """Named flags plus the ``raw`` value (JSON)."""
        out: dict[str, Any] = {"raw": f"{self.to_u64():#x}"}
        for name, _bit in _PLATFORM_FLAGS:
            out[name] = bool(getattr(self, name))
        return out


def product_from_cpuid(family: int, model: int) -> Product:
    """The product of a combined CPUID family/model (report bytes 0x188, 0x189)."""
    if family == 0x19 and model <= 0x0F:
        return Product.MILAN
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return Product.GENOA
    if family == 0x1A and model <= 0x1F:
        return Product.TURIN
    raise MalformedError(
        f"CPUID family {family:#04x} model {model:#04x} is not a known SEV-SNP product"
    )


def _check_len(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise MalformedError(f"{name} must be {size} bytes, got {got}")


def _check_uint(name: str, value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise MalformedError(f"{name}={value!r} is not an unsigned {bits}-bit integer")


def _mbz(data: bytes, lo: int, hi: int, what: str = "reserved") -> None:
    if any(data[lo:hi]):
        raise MalformedError(
            f"{what} bytes {lo:#05x}..{hi - 1:#05x} must be zero, got {data[lo:hi].hex()}"
        )


_BYTE_FIELDS: tuple[tuple[str, int, int], ...] = (
    # name, offset, size
    ("family_id", 0x010, 16),
    ("image_id", 0x020, 16),
    ("report_data", 0x050, 64),
    ("measurement", 0x090, 48),
    ("host_data", 0x0C0, 32),
    ("id_key_digest", 0x0E0, 48),
    ("author_key_digest", 0x110, 48),
    ("report_id", 0x140, 32),
    ("report_id_ma", 0x160, 32),
    ("chip_id", 0x1A0, 64),
)
_TCB_FIELDS: tuple[tuple[str, int], ...] = (
    ("current_tcb", 0x038),
    ("reported_tcb", 0x180),
    ("committed_tcb", 0x1E0),
    ("launch_tcb", 0x1F0),
)
_VERSION_BYTES: tuple[tuple[str, int], ...] = (
    ("current_build", 0x1E8),
    ("current_minor", 0x1E9),
    ("current_major", 0x1EA),
    ("committed_build", 0x1EC),
    ("committed_minor", 0x1ED),
    ("committed_major", 0x1EE),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestationReport:
    """A decoded, validated ATTESTATION_REPORT (see the module docstring for offsets).

    Construct it with :meth:`from_bytes`, or directly (the simulator does) and then
    :meth:`to_bytes`; the constructor enforces the same invariants as the parser.
    ``cpuid_*`` are ``None`` exactly for version 2; ``*_mit_vector`` are set exactly
    for version 5. ``product`` selects the TCB layout (FMC exactly on Turin).
    """

    product: Product
    version: int
    current_tcb: TcbVersion
    reported_tcb: TcbVersion
    committed_tcb: TcbVersion
    launch_tcb: TcbVersion
    guest_svn: int = 0
    policy: GuestPolicy = field(default_factory=GuestPolicy)
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    vmpl: int = 0
    signature_algo: int = SIGNATURE_ALGO_ECDSA_P384_SHA384
    platform_info: PlatformInfo = field(default_factory=PlatformInfo)
    author_key_en: bool = False
    mask_chip_key: bool = False
    signing_key: SigningKey = SigningKey.VCEK
    report_data: bytes = bytes(64)
    measurement: bytes = bytes(48)
    host_data: bytes = bytes(32)
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    report_id: bytes = bytes(32)
    report_id_ma: bytes = b"\xff" * 32
    cpuid_fam_id: int | None = None
    cpuid_mod_id: int | None = None
    cpuid_step: int | None = None
    chip_id: bytes = bytes(64)
    current_build: int = 0
    current_minor: int = 0
    current_major: int = 0
    committed_build: int = 0
    committed_minor: int = 0
    committed_major: int = 0
    launch_mit_vector: int | None = None
    current_mit_vector: int | None = None
    signature_r: int = 0
    signature_s: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.product, Product):
            raise MalformedError(f"product must be a Product, got {self.product!r}")
        if self.version not in SUPPORTED_REPORT_VERSIONS:
            raise MalformedError(
                f"unsupported report version {self.version!r}; supported: "
                + ", ".join(str(v) for v in sorted(SUPPORTED_REPORT_VERSIONS))
            )
        if self.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
            raise MalformedError(
                f"unknown signature algorithm {self.signature_algo!r}; "
                "only 1 (ECDSA P-384 with SHA-384) is defined"
            )
        _check_uint("guest_svn", self.guest_svn, 32)
        _check_uint("vmpl", self.vmpl, 32)
        for name, _off, size in _BYTE_FIELDS:
            _check_len(name, getattr(self, name), size)
        for name, _off in _VERSION_BYTES:
            _check_uint(name, getattr(self, name), 8)
        for name, _off in _TCB_FIELDS:
            tcb = getattr(self, name)
            if not isinstance(tcb, TcbVersion):
                raise MalformedError(f"{name} must be a TcbVersion")
            if (tcb.fmc is not None) != self.product.has_fmc:
                raise MalformedError(
                    f"{name}: a {self.product.value} TCB "
                    + ("needs" if self.product.has_fmc else "has no")
                    + " FMC component"
                )
        if not isinstance(self.signing_key, SigningKey):
            raise MalformedError(f"signing_key must be a SigningKey, got {self.signing_key!r}")
        if not isinstance(self.policy, GuestPolicy):
            raise MalformedError("policy must be a GuestPolicy")
        if not isinstance(self.platform_info, PlatformInfo):
            raise MalformedError("platform_info must be a PlatformInfo")
        cpuid = (self.cpuid_fam_id, self.cpuid_mod_id, self.cpuid_step)
        if self.version >= 3:
            if any(v is None for v in cpuid):
                raise MalformedError(f"a version {self.version} report carries CPUID bytes")
            assert self.cpuid_fam_id is not None and self.cpuid_mod_id is not None
            assert self.cpuid_step is not None
            _check_uint("cpuid_fam_id", self.cpuid_fam_id, 8)
            _check_uint("cpuid_mod_id", self.cpuid_mod_id, 8)
            _check_uint("cpuid_step", self.cpuid_step, 8)
            inferred = product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)
            if inferred is not self.product:
                raise MalformedError(
                    f"report CPUID says {inferred.value} but product {self.product.value} was given"
                )
        elif any(v is not None for v in cpuid):
            raise MalformedError("a version 2 report has no CPUID bytes")
        mit = (self.launch_mit_vector, self.current_mit_vector)
        if self.version >= 5:
            if any(v is None for v in mit):
                raise MalformedError(f"a version {self.version} report carries mitigation vectors")
            for name, value in zip(("launch_mit_vector", "current_mit_vector"), mit, strict=True):
                assert value is not None
                _check_uint(name, value, 64)
        elif any(v is not None for v in mit):
            raise MalformedError(f"a version {self.version} report has no mitigation vectors")
        if self.mask_chip_key and any(self.chip_id):
            raise MalformedError("MASK_CHIP_KEY is set but CHIP_ID is not zero")
        _check_uint("signature_r", self.signature_r, 8 * SIG_COMPONENT_SIZE)
        _check_uint("signature_s", self.signature_s, 8 * SIG_COMPONENT_SIZE)

    # -- parsing -------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes, product: Product | None = None) -> AttestationReport:
        """Parse exactly 0x4A0 bytes.

        ``product``: required for version-2 reports (no CPUID bytes); for version 3 and
        later it is inferred from CPUID_FAM_ID/CPUID_MOD_ID and, when also given, must
        agree. Raises :class:`MalformedError` naming the offending field or range.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedError(f"report must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) != REPORT_SIZE:
            raise MalformedError(
                f"attestation report must be {REPORT_SIZE} (0x4A0) bytes, got {len(data)}"
            )
        version, guest_svn, policy_raw = struct.unpack_from("<IIQ", data, 0x000)
        if version not in SUPPORTED_REPORT_VERSIONS:
            raise MalformedError(
                f"unsupported report version {version}; supported: "
                + ", ".join(str(v) for v in sorted(SUPPORTED_REPORT_VERSIONS))
            )
        vmpl, sig_algo = struct.unpack_from("<II", data, 0x030)
        if sig_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
            raise MalformedError(
                f"unknown signature algorithm {sig_algo}; only 1 (ECDSA P-384 with SHA-384) "
                "is defined"
            )
        (platform_raw,) = struct.unpack_from("<Q", data, 0x040)
        (key_info,) = struct.unpack_from("<I", data, 0x048)
        if key_info >> 5:
            raise MalformedError(f"key info word {key_info:#x} at 0x048: bits 31:5 must be zero")
        signing_raw = key_info >> 2 & 7
        try:
            signing_key = SigningKey(signing_raw)
        except ValueError:
            raise MalformedError(
                f"SIGNING_KEY {signing_raw} is reserved (0 VCEK, 1 VLEK, 7 none)"
            ) from None
        _mbz(data, 0x04C, 0x050)

        cpuid: tuple[int | None, int | None, int | None] = (None, None, None)
        if version >= 3:
            cpuid = (data[0x188], data[0x189], data[0x18A])
            _mbz(data, 0x18B, 0x1A0)
            assert cpuid[0] is not None and cpuid[1] is not None
            inferred = product_from_cpuid(cpuid[0], cpuid[1])
            if product is not None and product is not inferred:
                raise MalformedError(
                    f"report CPUID says {inferred.value} but product {product.value} was given"
                )
            product = inferred
        else:
            _mbz(data, 0x188, 0x1A0, "reserved (CPUID in version 3+)")
            if product is None:
                raise MalformedError(
                    "a version 2 report does not name its product; pass the product "
                    "(e.g. from the VCEK's productName)"
                )
        _mbz(data, 0x1EB, 0x1EC)
        _mbz(data, 0x1EF, 0x1F0)
        mit: tuple[int | None, int | None] = (None, None)
        if version >= 5:
            mit = struct.unpack_from("<QQ", data, 0x1F8)
            _mbz(data, 0x208, SIGNED_SIZE)
        else:
            _mbz(data, 0x1F8, SIGNED_SIZE)
        r_off = SIGNED_SIZE
        s_off = SIGNED_SIZE + SIG_COMPONENT_SIZE
        _mbz(data, s_off + SIG_COMPONENT_SIZE, REPORT_SIZE, "signature reserved")

        fields: dict[str, Any] = {name: data[off : off + size] for name, off, size in _BYTE_FIELDS}
        for name, off in _TCB_FIELDS:
            try:
                fields[name] = TcbVersion.from_bytes(data[off : off + 8], product)
            except MalformedError as exc:
                raise MalformedError(f"{name.upper()} at {off:#05x}: {exc}") from None
        for name, off in _VERSION_BYTES:
            fields[name] = data[off]
        return cls(
            product=product,
            version=version,
            guest_svn=guest_svn,
            policy=GuestPolicy.from_u64(policy_raw),
            vmpl=vmpl,
            signature_algo=sig_algo,
            platform_info=PlatformInfo.from_u64(platform_raw),
            author_key_en=bool(key_info & 1),
            mask_chip_key=bool(key_info & 2),
            signing_key=signing_key,
            cpuid_fam_id=cpuid[0],
            cpuid_mod_id=cpuid[1],
            cpuid_step=cpuid[2],
            launch_mit_vector=mit[0],
            current_mit_vector=mit[1],
            signature_r=int.from_bytes(data[r_off : r_off + SIG_COMPONENT_SIZE], "little"),
            signature_s=int.from_bytes(data[s_off : s_off + SIG_COMPONENT_SIZE], "little"),
            **fields,
        )

    @staticmethod
    def peek_version(data: bytes) -> int:
        """The VERSION field of raw report bytes (no validation beyond length)."""
        if len(data) < 4:
            raise MalformedError(f"attestation report too short ({len(data)} bytes)")
        return int.from_bytes(data[:4], "little")

    # -- serialization -------------------------------------------------------------

    def signed_bytes(self) -> bytes:
        """Bytes 0x000-0x29F: the message the signature covers."""
        buf = bytearray(SIGNED_SIZE)
        struct.pack_into("<IIQ", buf, 0x000, self.version, self.guest_svn, self.policy.to_u64())
        struct.pack_into("<II", buf, 0x030, self.vmpl, self.signature_algo)
        struct.pack_into("<Q", buf, 0x040, self.platform_info.to_u64())
        key_info = int(self.author_key_en) | int(self.mask_chip_key) << 1 | self.signing_key << 2
        struct.pack_into("<I", buf, 0x048, key_info)
        for name, off, size in _BYTE_FIELDS:
            buf[off : off + size] = getattr(self, name)
        for name, off in _TCB_FIELDS:
            buf[off : off + 8] = getattr(self, name).to_bytes(self.product)
        if self.version >= 3:
            assert self.cpuid_fam_id is not None
            assert self.cpuid_mod_id is not None
            assert self.cpuid_step is not None
            buf[0x188:0x18B] = bytes((self.cpuid_fam_id, self.cpuid_mod_id, self.cpuid_step))
        for name, off in _VERSION_BYTES:
            buf[off] = getattr(self, name)
        if self.version >= 5:
            assert self.launch_mit_vector is not None and self.current_mit_vector is not None
            struct.pack_into("<QQ", buf, 0x1F8, self.launch_mit_vector, self.current_mit_vector)
        return bytes(buf)

    def signature_bytes(self) -> bytes:
        """The 0x200-byte signature area (R, S little-endian, then zeros)."""
        return (
            self.signature_r.to_bytes(SIG_COMPONENT_SIZE, "little")
            + self.signature_s.to_bytes(SIG_COMPONENT_SIZE, "little")
        ).ljust(SIGNATURE_AREA_SIZE, b"\0")

    def to_bytes(self) -> bytes:
        """The 0x4A0-byte ABI encoding (exact inverse of :meth:`from_bytes`)."""
        return self.signed_bytes() + self.signature_bytes()

    def with_signature(self, r: int, s: int) -> AttestationReport:
        """A copy carrying the ECDSA signature ``(r, s)`` (for the simulator)."""
        return replace(self, signature_r=r, signature_s=s)

    # -- presentation --------------------------------------------------------------

    def to_json_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready: byte strings as lower-case hex, TCBs by component."""
        out: dict[str, Any] = {
            "product": self.product.value,
            "version": self.version,
            "guest_svn": self.guest_svn,
            "policy": self.policy.flags(),
            "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(),
            "vmpl": self.vmpl,
            "signature_algo": self.signature_algo,
            "current_tcb": self.current_tcb.components(),
            "platform_info": self.platform_info.flags(),
            "author_key_en": self.author_key_en,
            "mask_chip_key": self.mask_chip_key,
            "signing_key": self.signing_key.label,
            "report_data": self.report_data.hex(),
            "measurement": self.measurement.hex(),
            "host_data": self.host_data.hex(),
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(),
            "report_id": self.report_id.hex(),
            "report_id_ma": self.report_id_ma.hex(),
            "reported_tcb": self.reported_tcb.components(),
            "cpuid_fam_id": self.cpuid_fam_id,
            "cpuid_mod_id": self.cpuid_mod_id,
            "cpuid_step": self.cpuid_step,
            "chip_id": self.chip_id.hex(),
            "committed_tcb": self.committed_tcb.components(),
            "current_version": f"{self.current_major}.{self.current_minor}.{self.current_build}",
            "committed_version": (
                f"{self.committed_major}.{self.committed_minor}.{self.committed_build}"
            ),
            "launch_tcb": self.launch_tcb.components(),
            "launch_mit_vector": self.launch_mit_vector,
            "current_mit_vector": self.current_mit_vector,
            "signature_r": f"{self.signature_r:096x}",
            "signature_s": f"{self.signature_s:096x}",
        }
        return out
