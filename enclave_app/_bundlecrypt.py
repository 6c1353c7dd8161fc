"""The encrypted model bundle: the form in which a vision bundle reaches the enclave.

A model bundle (``vision._bundle``: ``manifest.json`` plus one safetensors file per
network) is encrypted by the operator with a 256-bit key; the key is stored at the
attestation service as the resource ``model-bundle-key`` and released only to attested
enclaves. The encrypted file can therefore lie anywhere (the enclave's disk image, an
object store): only an enclave that passed appraisal can use it.

Format ``pmc2-encrypted-bundle/v1`` (all integers big-endian)::

    offset  size  field
    0       8     magic          "PMC2EBND"
    8       1     version        0x01
    9       1     algorithm      0x01 = AES-256-GCM
    10      2     reserved       zero
    12      16    key_check      SHA-256("pmc2-bundle-v1 key-check" || 0x00 || key)[0:16]
    28      48    manifest_digest  SHA-384 of the manifest's canonical JSON
                                   (vision.manifest_digest; what the launch
                                   configuration's model_bundle_digest pins)
    76      12    nonce          random, fresh for every encryption
    88      8     ct_len         length of ct (>= 16)
    96      ct_len ct            AES-256-GCM(key, nonce, plaintext, aad = bytes 0..95)

The 96-byte header is the associated data, so the manifest digest (in clear, it is not
secret) is bound to the ciphertext: changing it, or any other header byte, fails
decryption. ``key_check`` commits to the key (AES-GCM alone is not key-committing) and
tells a wrong key apart from a damaged file without trying to decrypt.

The plaintext is a flat archive of the bundle's files, ``manifest.json`` first, then the
network files in role order (``target``, ``aux``, ``generator``, ``codec``; those the
manifest lists)::

    count u16, then per file: name_len u16, name (ASCII), size u64, bytes

Opening (:func:`open_bundle`), checklist:

1. Size: at most :data:`MAX_ENCRYPTED_BYTES`; the header parses (magic, version,
   algorithm, reserved zero, ``ct_len`` equals the remaining length).
2. The key is 32 bytes and ``key_check`` matches it (else "wrong key").
3. When ``expected_digest`` is given (the launch configuration's), the header's manifest
   digest equals it (constant-time), before decryption.
4. AES-256-GCM decryption with the header as associated data (else "damaged").
5. The archive parses strictly: names are ``manifest.json`` or ``<role>.safetensors``,
   no duplicates, sizes within the remaining bytes, nothing after the last file.
6. The manifest parses (``vision.BundleManifest.from_bytes``) and its digest equals the
   header's; the archive holds exactly the manifest's files, each of the manifest's
   size and SHA-256.

The result is the bundle's files in memory; :func:`materialize` writes them into a
private (0700) directory for ``vision.load_bundle``, which checks every file again
before it is parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vision import MAX_BUNDLE_BYTES, ROLES, BundleError, BundleManifest, read_manifest

__all__ = [
    "BUNDLE_KEY_SIZE",
    "ENCRYPTED_BUNDLE_MAGIC",
    "MAX_ENCRYPTED_BYTES",
    "BundleCryptError",
    "DecryptedBundle",
    "bundle_key_check",
    "generate_bundle_key",
    "open_bundle",
    "seal_bundle",
]

ENCRYPTED_BUNDLE_MAGIC = b"PMC2EBND"
VERSION = 1
ALG_AES_256_GCM = 1
BUNDLE_KEY_SIZE = 32
HEADER_SIZE = 96
NONCE_SIZE = 12
TAG_SIZE = 16
DIGEST_SIZE = 48
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
MAX_ENCRYPTED_BYTES = HEADER_SIZE + MAX_BUNDLE_BYTES + MAX_MANIFEST_BYTES + 4096
_KEY_CHECK_LABEL = b"pmc2-bundle-v1 key-check\x00"
_FILE_NAMES = (MANIFEST_NAME, *(f"{role}.safetensors" for role in ROLES))


class BundleCryptError(ValueError):
    """An encrypted bundle could not be opened (or sealed); the message says why."""


def generate_bundle_key() -> bytes:
    """A fresh 256-bit bundle key from the OS CSPRNG."""
    return os.urandom(BUNDLE_KEY_SIZE)


def bundle_key_check(key: bytes) -> bytes:
    """The 16-byte key commitment stored in the header."""
    return hashlib.sha256(_KEY_CHECK_LABEL + key).digest()[:16]


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != BUNDLE_KEY_SIZE:
        raise BundleCryptError(f"a bundle key is {BUNDLE_KEY_SIZE} bytes")


def _header(key: bytes, digest: bytes, nonce: bytes, ct_len: int) -> bytes:
    return (
        ENCRYPTED_BUNDLE_MAGIC
        + struct.pack(">BBH", VERSION, ALG_AES_256_GCM, 0)
        + bundle_key_check(key)
        + digest
        + nonce
        + struct.pack(">Q", ct_len)
    )


def _archive(files: list[tuple[str, bytes]]) -> bytes:
    parts = [struct.pack(">H", len(files))]
    for name, data in files:
        raw = name.encode("ascii")
        parts.append(struct.pack(">H", len(raw)) + raw + struct.pack(">Q", len(data)) + data)
    return b"".join(parts)


def seal_bundle(directory: Path, key: bytes, *, nonce: bytes | None = None) -> bytes:
    """Encrypt the bundle in ``directory`` under ``key``; returns the encrypted file.

    The bundle is read and checked first (manifest strictly parsed, each file's size and
    SHA-256 as the manifest says). ``nonce`` is for test vectors only (never reuse one).
    """
    _check_key(key)
    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
    except BundleError as exc:
        raise BundleCryptError(f"not a bundle: {exc}") from None
    manifest_bytes = (directory / MANIFEST_NAME).read_bytes()
    files: list[tuple[str, bytes]] = [(MANIFEST_NAME, manifest_bytes)]
    for role in ROLES:
        entry = manifest.networks.get(role)
        if entry is None:
            continue
        data = (directory / entry.file).read_bytes()
        if len(data) != entry.bytes or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BundleCryptError(f"{entry.file} does not match the manifest")
        files.append((entry.file, data))
    plaintext = _archive(files)
    digest = bytes.fromhex(manifest.digest())
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise BundleCryptError(f"a nonce is {NONCE_SIZE} bytes")
    header = _header(key, digest, nonce, len(plaintext) + TAG_SIZE)
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


@dataclass(frozen=True)
class DecryptedBundle:
    """An opened bundle: its manifest and files (name → bytes), in enclave memory."""

    manifest: BundleManifest
    files: Mapping[str, bytes] = field(repr=False)

    @property
    def digest(self) -> str:
        """The manifest digest (SHA-384, lowercase hex)."""
        return self.manifest.digest()

    def materialize(self, directory: Path) -> Path:
        """Write the files into ``directory`` (created 0700, must be new or empty)."""
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        if any(directory.iterdir()):
            raise BundleCryptError(f"{directory} is not empty")
        for name, data in self.files.items():
            fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        return directory


def _parse_archive(data: bytes) -> dict[str, bytes]:
    if len(data) < 2:
        raise BundleCryptError("archive truncated")
    (count,) = struct.unpack_from(">H", data, 0)
    if not 1 <= count <= len(_FILE_NAMES):
        raise BundleCryptError(f"archive holds {count} files")
    pos = 2
    files: dict[str, bytes] = {}
    for _ in range(count):
        if pos + 2 > len(data):
            raise BundleCryptError("archive truncated (name length)")
        (name_len,) = struct.unpack_from(">H", data, pos)
        pos += 2
        if pos + name_len + 8 > len(data):
            raise BundleCryptError("archive truncated (name)")
        try:
            name = data[pos : pos + name_len].decode("ascii")
        except UnicodeDecodeError:
            raise BundleCryptError("archive file name is not ASCII") from None
        pos += name_len
        if name not in _FILE_NAMES:
            raise BundleCryptError(f"unexpected file {name!r} in the archive")
        if name in files:
            raise BundleCryptError(f"duplicate file {name!r} in the archive")
        (size,) = struct.unpack_from(">Q", data, pos)
        pos += 8
        if size > len(data) - pos:
            raise BundleCryptError(f"archive truncated ({name})")
        files[name] = data[pos : pos + size]
        pos += size
    if pos != len(data):
        raise BundleCryptError("trailing bytes after the archive")
    return files


def open_bundle(data: bytes, key: bytes, *, expected_digest: str | None = None) -> DecryptedBundle:
    """Decrypt and check an encrypted bundle (see the module checklist)."""
    # 1.
    if len(data) > MAX_ENCRYPTED_BYTES:
        raise BundleCryptError(f"encrypted bundle larger than {MAX_ENCRYPTED_BYTES} bytes")
    if len(data) < HEADER_SIZE + TAG_SIZE:
        raise BundleCryptError("encrypted bundle truncated")
    if data[:8] != ENCRYPTED_BUNDLE_MAGIC:
        raise BundleCryptError("not an encrypted PMC2 bundle (bad magic)")
    version, algorithm, reserved = struct.unpack_from(">BBH", data, 8)
    if version != VERSION:
        raise BundleCryptError(f"unsupported encrypted-bundle version {version}")
    if algorithm != ALG_AES_256_GCM or reserved != 0:
        raise BundleCryptError("unsupported encrypted-bundle algorithm")
    key_check = data[12:28]
    digest = data[28:76]
    nonce = data[76:88]
    (ct_len,) = struct.unpack_from(">Q", data, 88)
    if ct_len != len(data) - HEADER_SIZE:
        raise BundleCryptError("encrypted bundle length does not match its header")
    # 2.
    _check_key(key)
    if not hmac.compare_digest(key_check, bundle_key_check(key)):
        raise BundleCryptError("wrong key: the bundle was encrypted under another key")
    # 3.
    if expected_digest is not None:
        try:
            pinned = bytes.fromhex(expected_digest)
        except ValueError:
            raise BundleCryptError("expected_digest must be hex") from None
        if not hmac.compare_digest(pinned, digest):
            raise BundleCryptError(
                f"the bundle's manifest digest {digest.hex()} is not the pinned {expected_digest}"
            )
    # 4.
    try:
        plaintext = AESGCM(key).decrypt(nonce, data[HEADER_SIZE:], data[:HEADER_SIZE])
    except InvalidTag:
        raise BundleCryptError("the encrypted bundle is damaged (authentication failed)") from None
    # 5.
    files = _parse_archive(plaintext)
    # 6.
    manifest_bytes = files.get(MANIFEST_NAME)
    if manifest_bytes is None or len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise BundleCryptError("the archive has no usable manifest.json")
    try:
        manifest = BundleManifest.from_bytes(manifest_bytes)
    except BundleError as exc:
        raise BundleCryptError(f"bad manifest: {exc}") from None
    if not hmac.compare_digest(bytes.fromhex(manifest.digest()), digest):
        raise BundleCryptError("the manifest does not hash to the header's digest")
    wanted = {MANIFEST_NAME} | {entry.file for entry in manifest.networks.values()}
    if set(files) != wanted:
        raise BundleCryptError(
            f"the archive's files {sorted(files)} are not the manifest's {sorted(wanted)}"
        )
    for entry in manifest.networks.values():
        blob = files[entry.file]
        actual = hashlib.sha256(blob).digest()
        if len(blob) != entry.bytes or not hmac.compare_digest(actual, bytes.fromhex(entry.sha256)):
            raise BundleCryptError(f"{entry.file} does not match the manifest")
    return DecryptedBundle(manifest=manifest, files=MappingProxyType(files))
