"""Firmware for measurement tests: Debian's OVMF, and a synthetic AmdSev-like image.

Debian's ``ovmf`` package (installed by ``make test``) ships ``OVMF_CODE.fd`` with SEV
metadata (zero pages, secrets page, CPUID page) but without an ``SNP_KERNEL_HASHES``
section, so it can only be measured for firmware-only launches. To test direct kernel
boot (kernel/initrd/command-line hashes), :func:`write_amdsev_like_firmware` writes a
small synthetic image whose OVMF footer table and SEV metadata follow the AmdSev build's
layout (edk2 ``OvmfPkg/ResetVector``); its code pages are filler, it boots nothing.
"""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from pathlib import Path

import pytest

DEBIAN_OVMF = Path("/usr/share/OVMF")
OVMF_CODE = DEBIAN_OVMF / "OVMF_CODE.fd"
OVMF_CODE_4M = DEBIAN_OVMF / "OVMF_CODE_4M.fd"

_FOOTER_GUID = "96b582de-1fb2-45f7-baea-a366c55a082d"
_HASH_TABLE_RV_GUID = "7255371f-3a3b-4b04-927b-1da6efa8d454"
_RESET_BLOCK_GUID = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
_SEV_META_GUID = "dc886566-984a-4798-a75e-5585a7bf67cc"

# SEV metadata section types (OvmfSevMetadata.asm)
SEC_MEM, SECRETS, CPUID, KERNEL_HASHES = 1, 2, 3, 0x10


def require_debian_ovmf(path: Path = OVMF_CODE) -> Path:
    """Debian's OVMF file; fails under CI=true when missing, skips elsewhere."""
    if not path.is_file():
        message = f"{path} missing: install Debian's ovmf package (make sysdeps)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _entry(guid: str, data: bytes) -> bytes:
    return data + struct.pack("<H", len(data) + 18) + uuid.UUID(guid).bytes_le


def write_amdsev_like_firmware(
    path: Path, *, kernel_hashes: bool = True, size: int = 64 * 1024
) -> Path:
    """Write a synthetic firmware image with SNP metadata (and a kernel-hashes page)."""
    filler = b"".join(
        hashlib.sha256(b"pmc2 synthetic firmware %d" % i).digest() for i in range(size // 32)
    )
    image = bytearray(filler)
    sections = [
        (0x800000, 0x9000, SEC_MEM),
        (0x80A000, 0x3000, SEC_MEM),
        (0x80D000, 0x1000, SECRETS),
        (0x80E000, 0x1000, CPUID),
    ]
    if kernel_hashes:
        sections.append((0x80F000, 0x1000, KERNEL_HASHES))
    sections.append((0x810000, 0x10000, SEC_MEM))
    meta = b"ASEV" + struct.pack("<III", 16 + 12 * len(sections), 1, len(sections))
    meta += b"".join(struct.pack("<III", *s) for s in sections)
    meta_offset = 0x1000
    image[meta_offset : meta_offset + len(meta)] = meta
    table = _entry(_RESET_BLOCK_GUID, struct.pack("<I", 0x80B004))
    table += _entry(_SEV_META_GUID, struct.pack("<I", size - meta_offset))
    table += _entry(
        _HASH_TABLE_RV_GUID, struct.pack("<II", 0x80FC00, 0x400) if kernel_hashes else bytes(8)
    )
    footer = struct.pack("<H", len(table) + 18) + uuid.UUID(_FOOTER_GUID).bytes_le
    tail = table + footer + bytes(32)
    image[size - len(tail) :] = tail
    path.write_bytes(bytes(image))
    return path
