"""Values shared across the evidence library: products, TCB versions, AMD certificate OIDs.

TCB_VERSION layouts follow the SEV-SNP Firmware ABI Specification (AMD pub. 56860),
section 2.2 "TCB Version": Milan and Genoa place BOOT_LOADER, TEE, SNP and MICROCODE at
bytes 0, 1, 6 and 7; Turin adds FMC at byte 0 and moves BOOT_LOADER, TEE and SNP to bytes
1, 2 and 3 (MICROCODE stays at byte 7). Reserved bytes must be zero.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from attestation._errors import MalformedError

__all__ = ["OID", "Product", "TcbVersion"]


class Product(enum.Enum):
    """An AMD EPYC generation with SEV-SNP; the value is AMD's product name (KDS path)."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"

    @classmethod
    def parse(cls, text: str) -> Product:
        """Accept ``milan``, ``Milan``, ``MILAN`` or a KDS productName like ``Milan-B0``."""
        head = text.strip().split("-", 1)[0].lower()
        for product in cls:
            if product.value.lower() == head:
                return product
        raise MalformedError(f"unknown product {text!r}; expected Milan, Genoa or Turin")

    @property
    def has_fmc(self) -> bool:
        """Whether the TCB carries an FMC (firmware-mitigation) SPL (Turin and later)."""
        return self is Product.TURIN


@dataclass(frozen=True, slots=True)
class TcbVersion:
    """A decoded TCB_VERSION. ``fmc`` is ``None`` on products without it."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    def __post_init__(self) -> None:
        for name in ("bootloader", "tee", "snp", "microcode"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise MalformedError(f"TCB component {name}={value} outside 0..255")
        if self.fmc is not None and not 0 <= self.fmc <= 0xFF:
            raise MalformedError(f"TCB component fmc={self.fmc} outside 0..255")

    @classmethod
    def from_u64(cls, raw: int, product: Product) -> TcbVersion:
        """Decode a little-endian 64-bit TCB_VERSION with the product's layout."""
        b = raw.to_bytes(8, "little")
        if product.has_fmc:
            if any(b[4:7]):
                raise MalformedError(f"TCB_VERSION {raw:#018x}: reserved bytes 4-6 not zero")
            return cls(bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7], fmc=b[0])
        if any(b[2:6]):
            raise MalformedError(f"TCB_VERSION {raw:#018x}: reserved bytes 2-5 not zero")
        return cls(bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])

    @classmethod
    def from_bytes(cls, data: bytes, product: Product) -> TcbVersion:
        """Decode the 8 bytes of a TCB_VERSION field."""
        if len(data) != 8:
            raise MalformedError(f"TCB_VERSION must be 8 bytes, got {len(data)}")
        return cls.from_u64(int.from_bytes(data, "little"), product)

    def to_u64(self, product: Product) -> int:
        """Encode with the product's layout (FMC must be set exactly when Turin)."""
        b = bytearray(8)
        if product.has_fmc:
            if self.fmc is None:
                raise MalformedError("a Turin TCB_VERSION needs an FMC component")
            b[0], b[1], b[2], b[3], b[7] = (
                self.fmc,
                self.bootloader,
                self.tee,
                self.snp,
                self.microcode,
            )
        else:
            if self.fmc is not None:
                raise MalformedError(f"{product.value} TCB_VERSION has no FMC component")
            b[0], b[1], b[6], b[7] = self.bootloader, self.tee, self.snp, self.microcode
        return int.from_bytes(bytes(b), "little")

    def to_bytes(self, product: Product) -> bytes:
        """The 8 little-endian bytes of the field."""
        return self.to_u64(product).to_bytes(8, "little")

    def components(self) -> dict[str, int]:
        """Named components, e.g. for JSON output (``fmc`` only when present)."""
        out = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out

    def dominates(self, minimum: TcbVersion) -> list[str]:
        """Components below ``minimum`` (empty when every one is at least the minimum)."""
        low = [
            f"{name} {value} < {minimum.components()[name]}"
            for name, value in self.components().items()
            if name in minimum.components() and value < minimum.components()[name]
        ]
        if minimum.fmc is not None and self.fmc is None:
            low.append("fmc missing")
        return low


class OID:
    """Object identifiers of AMD's VCEK/VLEK certificate extensions (VCEK spec, AMD 57230)."""

    STRUCT_VERSION = "1.3.6.1.4.1.3704.1.1"
    PRODUCT_NAME = "1.3.6.1.4.1.3704.1.2"
    BL_SPL = "1.3.6.1.4.1.3704.1.3.1"
    TEE_SPL = "1.3.6.1.4.1.3704.1.3.2"
    SNP_SPL = "1.3.6.1.4.1.3704.1.3.3"
    SPL_4 = "1.3.6.1.4.1.3704.1.3.4"
    SPL_5 = "1.3.6.1.4.1.3704.1.3.5"
    SPL_6 = "1.3.6.1.4.1.3704.1.3.6"
    SPL_7 = "1.3.6.1.4.1.3704.1.3.7"
    UCODE_SPL = "1.3.6.1.4.1.3704.1.3.8"
    FMC_SPL = "1.3.6.1.4.1.3704.1.3.9"
    HW_ID = "1.3.6.1.4.1.3704.1.4"
    CSP_ID = "1.3.6.1.4.1.3704.1.5"
