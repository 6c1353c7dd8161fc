"""Report provider for the ``/dev/sev-guest`` ioctls (SNP_GET_REPORT, SNP_GET_EXT_REPORT).

Kernel interface: ``include/uapi/linux/sev-guest.h`` (structures below, natural x86-64
alignment) and ``drivers/virt/coco/sev-guest``; response layout: SEV-SNP Firmware ABI
(AMD pub. 56860) "MSG_REPORT_RSP" (status u32, report_size u32, 24 reserved bytes, then
the report at 0x20); error split: ``exitinfo2`` low 32 bits = firmware status,
high 32 bits = VMM (hypervisor) error, with ``SNP_GUEST_VMM_ERR_INVALID_LEN`` (1) and
``SNP_GUEST_VMM_ERR_BUSY`` (2); certificate buffer per the GHCB spec (AMD pub. 56421).

Procedure of :meth:`SevGuestDeviceProvider.get_report`:

1. Build ``snp_report_req`` {user_data = REPORT_DATA, vmpl}; for the extended request
   wrap it in ``snp_ext_report_req`` with a page-aligned certificate buffer
   (at most SEV_FW_BLOB_MAX_SIZE, 16 KiB).
2. Issue the ioctl with ``snp_guest_request_ioctl`` {msg_version = 1, req_data,
   resp_data}. On failure with VMM error INVALID_LEN the kernel wrote the needed
   ``certs_len`` back into the request: retry once with that size.
3. Any other failure raises :class:`ProviderError` naming errno, firmware and VMM errors.
4. Parse MSG_REPORT_RSP: status must be 0, ``report_size`` must fit the response.
5. The report must carry our REPORT_DATA at 0x50; the certificate buffer is parsed as
   a :class:`CertTable` (all zero: no certificates).
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import struct
from collections.abc import Callable
from pathlib import Path

from attestation._certtable import CertTable
from attestation._errors import MalformedError, ProviderError
from attestation._provider import REPORT_DATA_SIZE, GuestReport, check_report_request

__all__ = [
    "SEV_FW_BLOB_MAX_SIZE",
    "SNP_GET_DERIVED_KEY",
    "SNP_GET_EXT_REPORT",
    "SNP_GET_REPORT",
    "SNP_GUEST_VMM_ERR_BUSY",
    "SNP_GUEST_VMM_ERR_INVALID_LEN",
    "IoctlFn",
    "SevGuestDeviceProvider",
    "SnpExtReportReq",
    "SnpGuestRequestIoctl",
    "SnpReportReq",
    "SnpReportResp",
    "decode_exitinfo2",
    "parse_report_response",
]

PAGE_SIZE = 4096
SEV_FW_BLOB_MAX_SIZE = 0x4000
SNP_GUEST_VMM_ERR_INVALID_LEN = 1
SNP_GUEST_VMM_ERR_BUSY = 2
SEV_RET_NO_FW_CALL = 0xFFFFFFFF
MSG_VERSION = 1
REPORT_DATA_OFFSET = 0x50


class SnpReportReq(ctypes.Structure):
    """``struct snp_report_req`` (96 bytes)."""

    _fields_ = (
        ("user_data", ctypes.c_uint8 * 64),
        ("vmpl", ctypes.c_uint32),
        ("rsvd", ctypes.c_uint8 * 28),
    )


class SnpReportResp(ctypes.Structure):
    """``struct snp_report_resp`` (4000 bytes: MSG_REPORT_RSP)."""

    _fields_ = (("data", ctypes.c_uint8 * 4000),)


class SnpExtReportReq(ctypes.Structure):
    """``struct snp_ext_report_req`` (112 bytes with tail padding)."""

    _fields_ = (
        ("data", SnpReportReq),
        ("certs_address", ctypes.c_uint64),
        ("certs_len", ctypes.c_uint32),
    )


class _ExitInfoErrors(ctypes.Structure):
    _fields_ = (("fw_error", ctypes.c_uint32), ("vmm_error", ctypes.c_uint32))


class _ExitInfo(ctypes.Union):
    _anonymous_ = ("errors",)
    _fields_ = (("exitinfo2", ctypes.c_uint64), ("errors", _ExitInfoErrors))


class SnpGuestRequestIoctl(ctypes.Structure):
    """``struct snp_guest_request_ioctl`` (32 bytes)."""

    _anonymous_ = ("exit",)
    _fields_ = (
        ("msg_version", ctypes.c_uint8),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("exit", _ExitInfo),
    )


def _iowr(type_char: str, nr: int, size: int) -> int:
    """Linux ``_IOWR(type, nr, size)`` on x86-64 (dir bits 3 at 30, size at 16)."""
    ioc_read_write = 3
    return (ioc_read_write << 30) | (size << 16) | (ord(type_char) << 8) | nr


_IOCTL_SIZE = ctypes.sizeof(SnpGuestRequestIoctl)
SNP_GET_REPORT = _iowr("S", 0x0, _IOCTL_SIZE)
SNP_GET_DERIVED_KEY = _iowr("S", 0x1, _IOCTL_SIZE)
SNP_GET_EXT_REPORT = _iowr("S", 0x2, _IOCTL_SIZE)

#: SEV firmware status codes (``enum sev_ret_code``, SEV-SNP Firmware ABI "Status Codes").
FIRMWARE_STATUS = {
    0x00: "SUCCESS",
    0x01: "INVALID_PLATFORM_STATE",
    0x02: "INVALID_GUEST_STATE",
    0x03: "INVALID_CONFIG",
    0x04: "INVALID_LEN",
    0x05: "ALREADY_OWNED",
    0x06: "INVALID_CERTIFICATE",
    0x07: "POLICY_FAILURE",
    0x08: "INACTIVE",
    0x09: "INVALID_ADDRESS",
    0x0A: "BAD_SIGNATURE",
    0x0B: "BAD_MEASUREMENT",
    0x0C: "ASID_OWNED",
    0x0D: "INVALID_ASID",
    0x0E: "WBINVD_REQUIRED",
    0x0F: "DFFLUSH_REQUIRED",
    0x10: "INVALID_GUEST",
    0x11: "INVALID_COMMAND",
    0x12: "ACTIVE",
    0x13: "HWERROR_PLATFORM",
    0x14: "HWERROR_UNSAFE",
    0x15: "UNSUPPORTED",
    0x16: "INVALID_PARAM",
    0x17: "RESOURCE_LIMIT",
    0x18: "SECURE_DATA_INVALID",
    0x27: "INVALID_KEY",
}
VMM_ERRORS = {
    SNP_GUEST_VMM_ERR_INVALID_LEN: "INVALID_LEN (certificate buffer too small)",
    SNP_GUEST_VMM_ERR_BUSY: "BUSY (host throttled the request)",
}
#: MSG_REPORT_RSP.STATUS values.
REPORT_STATUS = {0x00: "SUCCESS", 0x16: "INVALID_PARAMETERS", 0x27: "INVALID_KEY_SELECTION"}

_RESP_HEADER = struct.Struct("<II24x")


def decode_exitinfo2(exitinfo2: int) -> str:
    """Human-readable firmware and VMM errors of an ``exitinfo2`` value."""
    fw = exitinfo2 & 0xFFFFFFFF
    vmm = exitinfo2 >> 32
    no_call = fw == SEV_RET_NO_FW_CALL
    fw_text = "no firmware call" if no_call else FIRMWARE_STATUS.get(fw, "unknown")
    parts = [f"firmware error {fw:#x} ({fw_text})"]
    if vmm:
        parts.append(f"VMM error {vmm:#x} ({VMM_ERRORS.get(vmm, 'unknown')})")
    return ", ".join(parts)


def parse_report_response(data: bytes) -> bytes:
    """The report inside a MSG_REPORT_RSP (step 4 of the module checklist)."""
    if len(data) < _RESP_HEADER.size:
        raise ProviderError(f"MSG_REPORT_RSP too short ({len(data)} bytes)")
    status, size = _RESP_HEADER.unpack_from(data)
    if status != 0:
        name = REPORT_STATUS.get(status, "unknown")
        raise ProviderError(f"firmware rejected the report request: status {status:#x} ({name})")
    end = _RESP_HEADER.size + size
    if size == 0 or end > len(data):
        raise ProviderError(f"MSG_REPORT_RSP report_size {size} does not fit the response")
    return bytes(data[_RESP_HEADER.size : end])


#: ``ioctl(fd, request, arg)``; raises ``OSError`` on failure, kernel writes into ``arg``.
IoctlFn = Callable[[int, int, SnpGuestRequestIoctl], None]


def _libc_ioctl(fd: int, request: int, arg: SnpGuestRequestIoctl) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
    libc.ioctl.restype = ctypes.c_int
    if libc.ioctl(fd, request, ctypes.addressof(arg)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class SevGuestDeviceProvider:
    """Obtains SEV-SNP reports through ``/dev/sev-guest`` (see the module docstring).

    ``extended=True`` uses SNP_GET_EXT_REPORT (report plus the host's certificates);
    ``ioctl`` is the kernel seam (tests pass an emulation).
    """

    def __init__(
        self,
        device: Path | str = "/dev/sev-guest",
        *,
        extended: bool = True,
        certs_len: int = SEV_FW_BLOB_MAX_SIZE,
        ioctl: IoctlFn | None = None,
    ) -> None:
        _check_certs_len(certs_len)
        self.device = Path(device)
        self.extended = extended
        self.certs_len = certs_len
        self._ioctl: IoctlFn = ioctl if ioctl is not None else _libc_ioctl

    def get_report(self, report_data: bytes, vmpl: int = 0) -> GuestReport:
        check_report_request(report_data, vmpl)
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise ProviderError(
                f"{self.device} does not exist (not an SEV-SNP guest, or sev-guest not loaded)"
            ) from exc
        except OSError as exc:
            raise ProviderError(f"cannot open {self.device}: {exc}") from exc
        try:
            if self.extended:
                report, certs = self._ext_report(fd, report_data, vmpl)
            else:
                report, certs = self._report(fd, report_data, vmpl), CertTable()
        finally:
            os.close(fd)
        if report[REPORT_DATA_OFFSET : REPORT_DATA_OFFSET + REPORT_DATA_SIZE] != report_data:
            raise ProviderError("sev-guest: the report does not carry the requested REPORT_DATA")
        return GuestReport(report=report, certs=certs, provider="sev-guest")

    def _call(self, fd: int, request: int, name: str, req: ctypes.Structure) -> SnpReportResp:
        resp = SnpReportResp()
        io = SnpGuestRequestIoctl(
            msg_version=MSG_VERSION,
            req_data=ctypes.addressof(req),
            resp_data=ctypes.addressof(resp),
        )
        try:
            self._ioctl(fd, request, io)
        except OSError as exc:
            raise _IoctlError(name, exc, io.exitinfo2) from exc
        return resp

    def _report(self, fd: int, report_data: bytes, vmpl: int) -> bytes:
        req = _report_req(report_data, vmpl)
        try:
            resp = self._call(fd, SNP_GET_REPORT, "SNP_GET_REPORT", req)
        except _IoctlError as failed:
            raise failed.provider_error() from failed.__cause__
        return parse_report_response(bytes(resp.data))

    def _ext_report(self, fd: int, report_data: bytes, vmpl: int) -> tuple[bytes, CertTable]:
        certs_len = self.certs_len
        for _ in range(2):
            certs = ctypes.create_string_buffer(certs_len)
            req = SnpExtReportReq(
                data=_report_req(report_data, vmpl),
                certs_address=ctypes.addressof(certs),
                certs_len=certs_len,
            )
            try:
                resp = self._call(fd, SNP_GET_EXT_REPORT, "SNP_GET_EXT_REPORT", req)
            except _IoctlError as failed:
                if failed.vmm_error != SNP_GUEST_VMM_ERR_INVALID_LEN:
                    raise failed.provider_error() from failed.__cause__
                needed = int(req.certs_len)
                if needed <= certs_len:
                    raise failed.provider_error() from failed.__cause__
                try:
                    _check_certs_len(needed)
                except MalformedError as exc:
                    raise ProviderError(
                        f"SNP_GET_EXT_REPORT: host needs a {needed}-byte certificate buffer, "
                        f"beyond the kernel's {SEV_FW_BLOB_MAX_SIZE}-byte limit"
                    ) from exc
                certs_len = needed
                continue
            report = parse_report_response(bytes(resp.data))
            try:
                table = CertTable.from_bytes(certs.raw)
            except MalformedError as exc:
                raise ProviderError(f"sev-guest: malformed certificate table: {exc}") from exc
            return report, table
        raise ProviderError("SNP_GET_EXT_REPORT: certificate buffer still too small after retry")


class _IoctlError(Exception):
    def __init__(self, name: str, exc: OSError, exitinfo2: int) -> None:
        super().__init__(name)
        self.name = name
        self.errno = exc.errno if exc.errno is not None else errno_mod.EIO
        self.exitinfo2 = int(exitinfo2)
        self.vmm_error = self.exitinfo2 >> 32

    def provider_error(self) -> ProviderError:
        return ProviderError(
            f"{self.name} failed: {os.strerror(self.errno)} (errno {self.errno}); "
            f"{decode_exitinfo2(self.exitinfo2)}"
        )


def _report_req(report_data: bytes, vmpl: int) -> SnpReportReq:
    req = SnpReportReq(vmpl=vmpl)
    ctypes.memmove(req.user_data, report_data, REPORT_DATA_SIZE)
    return req


def _check_certs_len(certs_len: int) -> None:
    if certs_len <= 0 or certs_len % PAGE_SIZE or certs_len > SEV_FW_BLOB_MAX_SIZE:
        raise MalformedError(
            f"certificate buffer length must be a positive multiple of {PAGE_SIZE} "
            f"up to {SEV_FW_BLOB_MAX_SIZE}, got {certs_len}"
        )
