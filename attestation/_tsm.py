"""Report provider for Linux configfs-tsm (``/sys/kernel/config/tsm/report``).

Interface: Linux ``Documentation/ABI/testing/configfs-tsm-report``. Creating a
directory under the report root makes a report entry with these attributes:
``inblob`` (write, ≤ 64 bytes: REPORT_DATA), ``privlevel`` (write, 0..3: the VMPL),
``privlevel_floor`` (read), ``provider`` (read: ``sev_guest`` on SEV-SNP),
``generation`` (read: incremented on every write to the entry), ``outblob`` (read:
the raw attestation report, generated on read) and ``auxblob`` (read: the host's
certificate table, :mod:`attestation._certtable`).

Procedure of :meth:`ConfigfsTsmProvider.get_report` (one attempt):

1. ``mkdir`` a fresh, unpredictably named entry (never reuse an existing one).
2. Read ``provider``; anything but the expected ``sev_guest`` is refused.
3. Read ``generation`` (G0) and ``privlevel_floor``; a VMPL below the floor is refused.
4. Write ``privlevel`` then ``inblob`` (two writes: G0 + 2 expected).
5. Read ``generation``: it must be G0 + 2, else another writer touched the entry.
6. Read ``outblob`` and ``auxblob``, then ``generation`` again: unchanged, else the
   blobs may belong to another writer's request.
7. The report must carry our REPORT_DATA at bytes 0x50..0x8F.
8. ``rmdir`` the entry, on success and on every error.

A generation conflict (steps 5 and 6) is retried with a fresh entry up to ``attempts``
times, then raises :class:`ProviderError`. File operations go through :class:`ConfigfsOps`
so tests can emulate the kernel side on a temporary tree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Protocol

from attestation._certtable import CertTable
from attestation._errors import MalformedError, ProviderError
from attestation._provider import GuestReport, check_report_request

__all__ = ["DEFAULT_TSM_ROOT", "ConfigfsOps", "ConfigfsTsmProvider", "OsConfigfsOps"]

DEFAULT_TSM_ROOT = Path("/sys/kernel/config/tsm/report")
REPORT_DATA_OFFSET = 0x50
#: TSM_REPORT_OUTBLOB_MAX is 32 KiB; auxblob is bounded the same way here.
MAX_BLOB = 32 * 1024


class ConfigfsOps(Protocol):
    """The file operations the provider performs (the kernel-facing seam)."""

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def read(self, path: Path) -> bytes: ...

    def write(self, path: Path, data: bytes) -> None: ...


class OsConfigfsOps:
    """Real configfs: one ``write(2)`` per attribute, bounded reads."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        with open(path, "rb", buffering=0) as fh:
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = fh.read(MAX_BLOB + 1 - size)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BLOB:
                    raise OSError(errno.EFBIG, f"{path.name} larger than {MAX_BLOB} bytes")

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(errno.EIO, f"short write to {path.name}: {written} of {len(data)}")


class _GenerationConflictError(Exception):
    pass


class ConfigfsTsmProvider:
    """Obtains SEV-SNP reports through configfs-tsm (see the module docstring)."""

    def __init__(
        self,
        root: Path | str = DEFAULT_TSM_ROOT,
        *,
        expected_provider: str = "sev_guest",
        attempts: int = 3,
        ops: ConfigfsOps | None = None,
    ) -> None:
        if attempts < 1:
            raise MalformedError("attempts must be at least 1")
        self.root = Path(root)
        self.expected_provider = expected_provider
        self.attempts = attempts
        self._ops: ConfigfsOps = ops if ops is not None else OsConfigfsOps()

    def get_report(self, report_data: bytes, vmpl: int = 0) -> GuestReport:
        check_report_request(report_data, vmpl)
        for _ in range(self.attempts):
            try:
                return self._attempt(report_data, vmpl)
            except _GenerationConflictError:
                continue
        raise ProviderError(
            f"configfs-tsm: generation changed during the request {self.attempts} times "
            "(another writer is using the entry); giving up"
        )

    def _attempt(self, report_data: bytes, vmpl: int) -> GuestReport:
        entry = self.root / f"pmc2-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            self._ops.mkdir(entry)
        except FileNotFoundError as exc:
            raise ProviderError(
                f"configfs-tsm not available: {self.root} does not exist "
                "(kernel without CONFIG_TSM_REPORTS, configfs not mounted, or not a CVM)"
            ) from exc
        except OSError as exc:
            raise ProviderError(f"configfs-tsm: cannot create {entry}: {exc}") from exc
        try:
            return self._request(entry, report_data, vmpl)
        finally:
            with contextlib.suppress(OSError):
                self._ops.rmdir(entry)

    def _read(self, entry: Path, name: str) -> bytes:
        try:
            return self._ops.read(entry / name)
        except OSError as exc:
            raise ProviderError(f"configfs-tsm: reading {name} failed: {exc}") from exc

    def _read_int(self, entry: Path, name: str) -> int:
        text = self._read(entry, name).decode("ascii", "replace").strip()
        try:
            return int(text, 10)
        except ValueError as exc:
            raise ProviderError(f"configfs-tsm: {name} is not a number: {text!r}") from exc

    def _write(self, entry: Path, name: str, data: bytes) -> None:
        try:
            self._ops.write(entry / name, data)
        except OSError as exc:
            raise ProviderError(f"configfs-tsm: writing {name} failed: {exc}") from exc

    def _request(self, entry: Path, report_data: bytes, vmpl: int) -> GuestReport:
        provider = self._read(entry, "provider").decode("ascii", "replace").strip()
        if provider != self.expected_provider:
            raise ProviderError(
                f"configfs-tsm provider is {provider!r}, expected {self.expected_provider!r}"
            )
        generation = self._read_int(entry, "generation")
        try:
            floor = self._read_int(entry, "privlevel_floor")
        except ProviderError:
            floor = 0  # kernels before privlevel_floor: no floor
        if vmpl < floor:
            raise ProviderError(f"configfs-tsm: VMPL {vmpl} is below privlevel_floor {floor}")
        self._write(entry, "privlevel", f"{vmpl}\n".encode("ascii"))
        self._write(entry, "inblob", report_data)
        expected = generation + 2
        if self._read_int(entry, "generation") != expected:
            raise _GenerationConflictError
        outblob = self._read(entry, "outblob")
        try:
            auxblob = self._ops.read(entry / "auxblob")
        except FileNotFoundError:
            auxblob = b""
        except OSError as exc:
            raise ProviderError(f"configfs-tsm: reading auxblob failed: {exc}") from exc
        if self._read_int(entry, "generation") != expected:
            raise _GenerationConflictError
        if len(outblob) < REPORT_DATA_OFFSET + len(report_data):
            raise ProviderError(f"configfs-tsm: outblob too short ({len(outblob)} bytes)")
        if outblob[REPORT_DATA_OFFSET : REPORT_DATA_OFFSET + len(report_data)] != report_data:
            raise ProviderError("configfs-tsm: the report does not carry the requested REPORT_DATA")
        try:
            certs = CertTable.from_bytes(auxblob)
        except MalformedError as exc:
            raise ProviderError(f"configfs-tsm: malformed auxblob: {exc}") from exc
        return GuestReport(report=outblob, certs=certs, provider="configfs-tsm")
