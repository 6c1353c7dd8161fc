"""HPKE suites: IANA identifiers, sizes, and the mapping onto ``cryptography``'s HPKE.

Identifiers are the IANA "HPKE KEM/KDF/AEAD Identifiers" values (RFC 9180 section 7 and
draft-ietf-hpke-pq for the PQ/T hybrid KEM and the SHAKE KDF). Exactly two suites are
supported (docs/protocol.md, section 2); each is named by its JOSE-HPKE algorithm name:

* ``HPKE-3``: DHKEM(X25519, HKDF-SHA256) 0x0020 / HKDF-SHA256 0x0001 / AES-128-GCM 0x0001,
  the default;
* ``HPKE-9``: MLKEM768-X25519 (X-Wing) 0x647a / SHAKE256 0x0011 / AES-256-GCM 0x0002,
  the post-quantum hybrid.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives import hpke

from sealed._errors import UnsupportedSuiteError

__all__ = [
    "DEFAULT_SUITE",
    "SUITE_MLKEM768_X25519",
    "SUITE_X25519",
    "SUPPORTED_SUITES",
    "AeadId",
    "HpkeSuite",
    "KdfId",
    "KemId",
]


class KemId(IntEnum):
    """HPKE KEM identifiers (IANA)."""

    DHKEM_X25519_HKDF_SHA256 = 0x0020
    MLKEM768_X25519 = 0x647A


class KdfId(IntEnum):
    """HPKE KDF identifiers (IANA)."""

    HKDF_SHA256 = 0x0001
    SHAKE256 = 0x0011


class AeadId(IntEnum):
    """HPKE AEAD identifiers (IANA)."""

    AES_128_GCM = 0x0001
    AES_256_GCM = 0x0002


# Nenc, Npk, Nsk of each KEM (RFC 9180 table 2; draft-ietf-hpke-pq for MLKEM768-X25519,
# whose private key is the 32-byte X-Wing seed).
_KEM_SIZES: dict[KemId, tuple[int, int, int]] = {
    KemId.DHKEM_X25519_HKDF_SHA256: (32, 32, 32),
    KemId.MLKEM768_X25519: (1120, 1216, 32),
}
# Nk of each AEAD; Nn = 12 and Nt = 16 for both.
_AEAD_KEY_SIZES: dict[AeadId, int] = {AeadId.AES_128_GCM: 16, AeadId.AES_256_GCM: 32}


@dataclass(frozen=True)
class HpkeSuite:
    """One supported (KEM, KDF, AEAD) combination. Construct with :meth:`from_ids` (or use
    the module constants); the constructor rejects unsupported combinations."""

    kem: KemId
    kdf: KdfId
    aead: AeadId

    def __post_init__(self) -> None:
        if (self.kem, self.kdf, self.aead) not in _SUITE_NAMES:
            raise UnsupportedSuiteError(int(self.kem), int(self.kdf), int(self.aead))

    @classmethod
    def from_ids(cls, kem_id: int, kdf_id: int, aead_id: int) -> HpkeSuite:
        """The suite for three wire identifiers; ``UnsupportedSuiteError`` otherwise."""
        try:
            kem, kdf, aead = KemId(kem_id), KdfId(kdf_id), AeadId(aead_id)
        except ValueError:
            raise UnsupportedSuiteError(kem_id, kdf_id, aead_id) from None
        return cls(kem, kdf, aead)

    @property
    def name(self) -> str:
        """The JOSE-HPKE algorithm name (``HPKE-3`` or ``HPKE-9``)."""
        return _SUITE_NAMES[(self.kem, self.kdf, self.aead)]

    @property
    def enc_size(self) -> int:
        """Nenc: the length of the encapsulated key."""
        return _KEM_SIZES[self.kem][0]

    @property
    def public_key_size(self) -> int:
        """Npk: the length of a serialized public key."""
        return _KEM_SIZES[self.kem][1]

    @property
    def private_key_size(self) -> int:
        """Nsk: the length of a serialized private key."""
        return _KEM_SIZES[self.kem][2]

    @property
    def aead_key_size(self) -> int:
        """Nk of the suite's AEAD, which is also the response key length."""
        return _AEAD_KEY_SIZES[self.aead]

    @property
    def ids(self) -> tuple[int, int, int]:
        return (int(self.kem), int(self.kdf), int(self.aead))

    def _hpke(self) -> hpke.Suite:
        return hpke.Suite(_HPKE_KEMS[self.kem], _HPKE_KDFS[self.kdf], _HPKE_AEADS[self.aead])

    def __repr__(self) -> str:
        return f"HpkeSuite({self.name})"

    def __str__(self) -> str:
        return f"{self.name} (kem=0x{self.kem:04x}, kdf=0x{self.kdf:04x}, aead=0x{self.aead:04x})"


_HPKE_KEMS = {
    KemId.DHKEM_X25519_HKDF_SHA256: hpke.KEM.X25519,
    KemId.MLKEM768_X25519: hpke.KEM.MLKEM768_X25519,
}
_HPKE_KDFS = {KdfId.HKDF_SHA256: hpke.KDF.HKDF_SHA256, KdfId.SHAKE256: hpke.KDF.SHAKE256}
_HPKE_AEADS = {AeadId.AES_128_GCM: hpke.AEAD.AES_128_GCM, AeadId.AES_256_GCM: hpke.AEAD.AES_256_GCM}
_SUITE_NAMES: dict[tuple[KemId, KdfId, AeadId], str] = {
    (KemId.DHKEM_X25519_HKDF_SHA256, KdfId.HKDF_SHA256, AeadId.AES_128_GCM): "HPKE-3",
    (KemId.MLKEM768_X25519, KdfId.SHAKE256, AeadId.AES_256_GCM): "HPKE-9",
}

SUITE_X25519 = HpkeSuite(KemId.DHKEM_X25519_HKDF_SHA256, KdfId.HKDF_SHA256, AeadId.AES_128_GCM)
SUITE_MLKEM768_X25519 = HpkeSuite(KemId.MLKEM768_X25519, KdfId.SHAKE256, AeadId.AES_256_GCM)
DEFAULT_SUITE = SUITE_X25519
SUPPORTED_SUITES: tuple[HpkeSuite, ...] = (SUITE_X25519, SUITE_MLKEM768_X25519)
