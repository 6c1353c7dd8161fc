"""The SEV-SNP extended-report certificate table (configfs-tsm ``auxblob``, SNP_GET_EXT_REPORT).

Layout (GHCB specification, AMD pub. 56421, section 4.1.8.1 "SNP Extended Guest Request"):
a table of 24-byte entries ``{GUID (16 bytes), offset (u32 LE), length (u32 LE)}``
terminated by an all-zero entry, followed by the certificates it points to. Offsets are
relative to the start of the buffer. The buffer is usually padded with zeros to a page.

GUID byte order: the 16 bytes are the GUID's hex digits in the order they are written
(RFC 4122 / ``uuid.UUID.bytes``), *not* the mixed-endian EFI ``bytes_le`` form; this is
how AMD's own ``sev-guest`` tools (libuuid ``uuid_parse``), virtee/sev and go-sev-guest
lay the table out.

Parsing checklist (fail closed, each failure a :class:`MalformedError`):
1. The buffer holds a terminator entry (all 24 bytes zero) within its length.
2. Every entry's ``[offset, offset + length)`` lies inside the buffer, after the table
   (terminator included), and does not overlap any other entry's range.
3. No entry has length zero; no GUID appears twice.
An empty buffer means "the host supplied no certificates" and parses to an empty table.
"""

from __future__ import annotations

import itertools
import struct
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from attestation._errors import MalformedError

__all__ = [
    "ARK_GUID",
    "ASK_GUID",
    "CRL_GUID",
    "VCEK_GUID",
    "VLEK_GUID",
    "CertTable",
]

VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
#: Some hosts (virtee/sev) also publish the CRL under this GUID.
CRL_GUID = uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea")

_NAMES = {VCEK_GUID: "vcek", VLEK_GUID: "vlek", ASK_GUID: "ask", ARK_GUID: "ark", CRL_GUID: "crl"}
_ENTRY = struct.Struct("<16sII")
ENTRY_SIZE = _ENTRY.size  # 24
#: Upper bound on entries considered; real tables hold at most a handful.
MAX_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class CertTable(Mapping[uuid.UUID, bytes]):
    """An immutable, ordered GUID → certificate-bytes map (usually DER certificates)."""

    entries: tuple[tuple[uuid.UUID, bytes], ...] = ()

    def __post_init__(self) -> None:
        seen: set[uuid.UUID] = set()
        for guid, data in self.entries:
            if guid.int == 0:
                raise MalformedError("certificate table: the all-zero GUID is the terminator")
            if guid in seen:
                raise MalformedError(f"certificate table: duplicate GUID {guid}")
            if not data:
                raise MalformedError(f"certificate table: empty entry for GUID {guid}")
            seen.add(guid)

    # Mapping protocol -------------------------------------------------------------
    def __getitem__(self, key: uuid.UUID) -> bytes:
        for guid, data in self.entries:
            if guid == key:
                return data
        raise KeyError(key)

    def __iter__(self) -> Iterator[uuid.UUID]:
        return (guid for guid, _ in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    # Convenience ------------------------------------------------------------------
    @classmethod
    def of(cls, certs: Mapping[uuid.UUID, bytes]) -> CertTable:
        """Build from a mapping (insertion order is kept)."""
        return cls(tuple((guid, bytes(data)) for guid, data in certs.items()))

    @classmethod
    def from_named(
        cls,
        *,
        vcek: bytes | None = None,
        vlek: bytes | None = None,
        ask: bytes | None = None,
        ark: bytes | None = None,
    ) -> CertTable:
        """Build from the well-known certificates (``None`` ones are left out)."""
        pairs = ((VCEK_GUID, vcek), (VLEK_GUID, vlek), (ASK_GUID, ask), (ARK_GUID, ark))
        return cls(tuple((guid, data) for guid, data in pairs if data is not None))

    @property
    def vcek(self) -> bytes | None:
        return self.get(VCEK_GUID)

    @property
    def vlek(self) -> bytes | None:
        return self.get(VLEK_GUID)

    @property
    def ask(self) -> bytes | None:
        return self.get(ASK_GUID)

    @property
    def ark(self) -> bytes | None:
        return self.get(ARK_GUID)

    def named(self) -> dict[str, bytes]:
        """Entries keyed by ``vcek``/``vlek``/``ask``/``ark``/``crl`` or the GUID string."""
        return {_NAMES.get(guid, str(guid)): data for guid, data in self.entries}

    # Wire format ------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes) -> CertTable:
        """Parse a certificate buffer (see the module checklist)."""
        if not data:
            return cls()
        table: list[tuple[uuid.UUID, int, int]] = []
        pos = 0
        while True:
            if pos + ENTRY_SIZE > len(data):
                raise MalformedError("certificate table: no terminating all-zero entry")
            raw_guid, offset, length = _ENTRY.unpack_from(data, pos)
            pos += ENTRY_SIZE
            if raw_guid == bytes(16):
                if offset or length:
                    raise MalformedError("certificate table: zero GUID with non-zero offset/length")
                break
            if len(table) >= MAX_ENTRIES:
                raise MalformedError(f"certificate table: more than {MAX_ENTRIES} entries")
            table.append((uuid.UUID(bytes=raw_guid), offset, length))
        table_end = pos
        ranges: list[tuple[int, int, uuid.UUID]] = []
        for guid, offset, length in table:
            if length == 0:
                raise MalformedError(f"certificate table: entry {guid} has length 0")
            end = offset + length
            if offset < table_end:
                raise MalformedError(
                    f"certificate table: entry {guid} at offset {offset} overlaps the table "
                    f"(which ends at {table_end})"
                )
            if end > len(data):
                raise MalformedError(
                    f"certificate table: entry {guid} [{offset}, {end}) exceeds the "
                    f"{len(data)}-byte buffer"
                )
            ranges.append((offset, end, guid))
        ranges.sort()
        for (_, end_a, guid_a), (start_b, _, guid_b) in itertools.pairwise(ranges):
            if start_b < end_a:
                raise MalformedError(f"certificate table: entries {guid_a} and {guid_b} overlap")
        return cls(tuple((guid, bytes(data[off : off + ln])) for guid, off, ln in table))

    def to_bytes(self, *, pad_to: int = 0) -> bytes:
        """Serialize: table, terminator, then the certificates in order.

        ``pad_to`` (e.g. 4096) zero-pads the result to a multiple of that many bytes.
        """
        header_len = ENTRY_SIZE * (len(self.entries) + 1)
        header = bytearray()
        body = bytearray()
        for guid, data in self.entries:
            header += _ENTRY.pack(guid.bytes, header_len + len(body), len(data))
            body += data
        header += bytes(ENTRY_SIZE)
        out = bytes(header + body)
        if pad_to > 0 and len(out) % pad_to:
            out += bytes(pad_to - len(out) % pad_to)
        return out
