"""Guest report providers: certificate table, configfs-tsm (fake tree), /dev/sev-guest structs.

No SEV-SNP hardware here: configfs-tsm runs against a fake tree in ``tmp_path`` whose
kernel side (generation counter, outblob generation, rmdir of a populated entry) is
emulated through the provider's ``ConfigfsOps`` seam; the ioctl provider runs against an
emulated ``ioctl`` that reads and writes the very ctypes structures the kernel would.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation import ReportProvider
from attestation._certtable import (
    ARK_GUID,
    ASK_GUID,
    CRL_GUID,
    VCEK_GUID,
    VLEK_GUID,
    CertTable,
)
from attestation._errors import MalformedError, ProviderError
from attestation._provider import GuestReport
from attestation._sevguest import (
    SNP_GET_DERIVED_KEY,
    SNP_GET_EXT_REPORT,
    SNP_GET_REPORT,
    SevGuestDeviceProvider,
    SnpExtReportReq,
    SnpGuestRequestIoctl,
    SnpReportReq,
    SnpReportResp,
    _libc_ioctl,
    decode_exitinfo2,
    parse_report_response,
)
from attestation._tsm import ConfigfsTsmProvider, OsConfigfsOps

REPORT_DATA = bytes(range(64))
VCEK = b"\x30\x82" + b"v" * 1300
ASK = b"\x30\x82" + b"a" * 1600
ARK = b"\x30\x82" + b"r" * 1600


def fake_report(report_data: bytes, vmpl: int) -> bytes:
    """A 0x4A0-byte buffer with REPORT_DATA and VMPL where the ABI puts them."""
    report = bytearray(0x4A0)
    struct.pack_into("<I", report, 0, 2)
    struct.pack_into("<I", report, 0x30, vmpl)
    report[0x50:0x90] = report_data
    return bytes(report)


# --- certificate table -------------------------------------------------------------------


def test_guids_are_amds() -> None:
    assert str(VCEK_GUID) == "63da758d-e664-4564-adc5-f4b93be8accd"
    assert str(VLEK_GUID) == "a8074bc2-a25a-483e-aae6-39c045a0b8a1"
    assert str(ASK_GUID) == "4ab7b379-bbac-4fe4-a02f-05aef327c782"
    assert str(ARK_GUID) == "c0b406a4-a803-4952-9743-3fb6014cd0ae"


def test_table_layout_is_pinned() -> None:
    table = CertTable.from_named(vcek=VCEK, ask=ASK, ark=ARK)
    raw = table.to_bytes()
    # three entries + terminator = 96 bytes of table, then the certificates in order
    assert raw[:16].hex() == "63da758de6644564adc5f4b93be8accd"  # RFC 4122 byte order
    assert struct.unpack_from("<II", raw, 16) == (96, len(VCEK))
    assert raw[24:40] == ASK_GUID.bytes
    assert struct.unpack_from("<II", raw, 40) == (96 + len(VCEK), len(ASK))
    assert raw[72:96] == bytes(24)
    assert raw[96 : 96 + len(VCEK)] == VCEK
    assert len(raw) == 96 + len(VCEK) + len(ASK) + len(ARK)


def test_table_round_trip_and_accessors() -> None:
    table = CertTable.from_named(vlek=VCEK, ask=ASK, ark=ARK)
    padded = table.to_bytes(pad_to=4096)
    assert len(padded) == 8192
    parsed = CertTable.from_bytes(padded)
    assert parsed == table
    assert parsed.vlek == VCEK and parsed.vcek is None
    assert parsed.ask == ASK and parsed.ark == ARK
    assert list(parsed) == [VLEK_GUID, ASK_GUID, ARK_GUID]
    assert parsed.named() == {"vlek": VCEK, "ask": ASK, "ark": ARK}
    assert len(parsed) == 3 and ASK_GUID in parsed


def test_unknown_guids_are_kept() -> None:
    other = uuid.UUID("12345678-1234-5678-9abc-def012345678")
    table = CertTable.of({VCEK_GUID: VCEK, other: b"extra", CRL_GUID: b"crl"})
    parsed = CertTable.from_bytes(table.to_bytes())
    assert parsed[other] == b"extra"
    assert parsed.named()[str(other)] == b"extra"
    assert parsed.named()["crl"] == b"crl"


@pytest.mark.parametrize("buffer", [b"", bytes(24), bytes(4096)])
def test_empty_tables(buffer: bytes) -> None:
    assert len(CertTable.from_bytes(buffer)) == 0


def _entry(guid: uuid.UUID, offset: int, length: int) -> bytes:
    return guid.bytes + struct.pack("<II", offset, length)


@pytest.mark.parametrize(
    ("buffer", "message"),
    [
        (_entry(VCEK_GUID, 48, 4) + b"abcd", "no terminating"),
        (_entry(VCEK_GUID, 10, 4) + bytes(24) + b"abcd", "overlaps the table"),
        (_entry(VCEK_GUID, 48, 100) + bytes(24) + b"abcd", "exceeds"),
        (_entry(VCEK_GUID, 48, 0) + bytes(24) + b"abcd", "length 0"),
        (
            _entry(VCEK_GUID, 72, 4) + _entry(ASK_GUID, 74, 4) + bytes(24) + b"abcdef",
            "overlap",
        ),
        (
            _entry(VCEK_GUID, 72, 2) + _entry(VCEK_GUID, 74, 2) + bytes(24) + b"abcd",
            "duplicate",
        ),
        (bytes(16) + struct.pack("<II", 24, 4) + b"abcd", "zero GUID"),
        (_entry(VCEK_GUID, 0xFFFFFFFF, 0xFFFFFFFF) + bytes(24), "overlaps|exceeds"),
    ],
)
def test_malformed_tables(buffer: bytes, message: str) -> None:
    with pytest.raises(MalformedError, match=message):
        CertTable.from_bytes(buffer)


def test_table_value_invariants() -> None:
    with pytest.raises(MalformedError):
        CertTable(((VCEK_GUID, b"a"), (VCEK_GUID, b"b")))
    with pytest.raises(MalformedError):
        CertTable(((uuid.UUID(int=0), b"a"),))
    with pytest.raises(MalformedError):
        CertTable(((VCEK_GUID, b""),))


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.uuids().filter(lambda u: u.int != 0),
        st.binary(min_size=1, max_size=64),
        max_size=6,
    ),
    st.sampled_from([0, 16, 4096]),
)
def test_table_round_trip_property(entries: dict[uuid.UUID, bytes], pad: int) -> None:
    table = CertTable.of(entries)
    assert CertTable.from_bytes(table.to_bytes(pad_to=pad)) == table


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_table_parser_fails_only_with_malformed_error(data: bytes) -> None:
    with contextlib.suppress(MalformedError):
        CertTable.from_bytes(data)


# --- configfs-tsm against a fake tree ----------------------------------------------------


class FakeTsm:
    """Emulates the kernel side of configfs-tsm on a real directory tree."""

    def __init__(
        self,
        *,
        provider: str = "sev_guest",
        floor: int | None = 0,
        auxblob: bytes = b"",
        conflicts: int = 0,
        conflict_at: str = "inblob",
        outblob_error: int | None = None,
        tamper: bool = False,
    ) -> None:
        self.provider = provider
        self.floor = floor
        self.auxblob = auxblob
        self.conflicts = conflicts  # how many attempts see another writer
        self.conflict_at = conflict_at
        self.outblob_error = outblob_error
        self.tamper = tamper
        self.mkdirs: list[Path] = []
        self.writes: list[tuple[str, bytes]] = []

    def _bump(self, entry: Path) -> None:
        gen = int((entry / "generation").read_text()) + 1
        (entry / "generation").write_text(f"{gen}\n")

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)
        self.mkdirs.append(path)
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        if self.floor is not None:
            (path / "privlevel_floor").write_text(f"{self.floor}\n")

    def rmdir(self, path: Path) -> None:
        for child in path.iterdir():
            child.unlink()
        os.rmdir(path)

    def write(self, path: Path, data: bytes) -> None:
        name = path.name
        if name not in ("inblob", "privlevel"):
            raise PermissionError(errno.EACCES, "read-only attribute")
        path.write_bytes(data)
        self.writes.append((name, data))
        self._bump(path.parent)
        if name == "inblob" and self.conflict_at == "inblob" and self.conflicts:
            self.conflicts -= 1
            self._bump(path.parent)  # somebody else wrote too

    def read(self, path: Path) -> bytes:
        entry, name = path.parent, path.name
        if name == "outblob":
            if self.outblob_error is not None:
                raise OSError(self.outblob_error, os.strerror(self.outblob_error))
            data = (entry / "inblob").read_bytes()
            vmpl = int((entry / "privlevel").read_text())
            if self.conflict_at == "outblob" and self.conflicts:
                self.conflicts -= 1
                self._bump(entry)
            return fake_report(bytes(64) if self.tamper else data, vmpl)
        if name == "auxblob":
            return self.auxblob
        return path.read_bytes()


def _tsm(tmp_path: Path, fake: FakeTsm, attempts: int = 3) -> ConfigfsTsmProvider:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True, exist_ok=True)
    return ConfigfsTsmProvider(root, ops=fake, attempts=attempts)


def test_tsm_success(tmp_path: Path) -> None:
    aux = CertTable.from_named(vcek=VCEK, ask=ASK, ark=ARK).to_bytes(pad_to=4096)
    fake = FakeTsm(auxblob=aux)
    provider = _tsm(tmp_path, fake)
    assert isinstance(provider, ReportProvider)
    got = provider.get_report(REPORT_DATA, vmpl=2)
    assert isinstance(got, GuestReport)
    assert got.provider == "configfs-tsm"
    assert got.report == fake_report(REPORT_DATA, 2)
    assert got.certs.vcek == VCEK and got.certs.ark == ARK
    assert fake.writes == [("privlevel", b"2\n"), ("inblob", REPORT_DATA)]
    assert list(provider.root.iterdir()) == []  # entry removed
    assert fake.mkdirs[0].name.startswith("pmc2-")


def test_tsm_entry_names_are_fresh(tmp_path: Path) -> None:
    fake = FakeTsm()
    provider = _tsm(tmp_path, fake)
    provider.get_report(REPORT_DATA)
    provider.get_report(REPORT_DATA)
    assert len({p.name for p in fake.mkdirs}) == 2


def test_tsm_without_auxblob_or_floor(tmp_path: Path) -> None:
    fake = FakeTsm(floor=None)
    got = _tsm(tmp_path, fake).get_report(REPORT_DATA)
    assert len(got.certs) == 0


@pytest.mark.parametrize("where", ["inblob", "outblob"])
def test_tsm_generation_conflict_is_retried(tmp_path: Path, where: str) -> None:
    fake = FakeTsm(conflicts=1, conflict_at=where)
    provider = _tsm(tmp_path, fake)
    assert provider.get_report(REPORT_DATA).report == fake_report(REPORT_DATA, 0)
    assert len(fake.mkdirs) == 2
    assert list(provider.root.iterdir()) == []


@pytest.mark.parametrize("where", ["inblob", "outblob"])
def test_tsm_persistent_generation_conflict_fails(tmp_path: Path, where: str) -> None:
    fake = FakeTsm(conflicts=10, conflict_at=where)
    provider = _tsm(tmp_path, fake, attempts=3)
    with pytest.raises(ProviderError, match="generation changed"):
        provider.get_report(REPORT_DATA)
    assert len(fake.mkdirs) == 3
    assert list(provider.root.iterdir()) == []


@pytest.mark.parametrize(
    ("fake", "vmpl", "message"),
    [
        (FakeTsm(provider="tdx_guest"), 0, "tdx_guest"),
        (FakeTsm(floor=1), 0, "privlevel_floor"),
        (FakeTsm(outblob_error=errno.EIO), 0, "outblob"),
        (FakeTsm(tamper=True), 0, "REPORT_DATA"),
        (FakeTsm(auxblob=b"\x01" * 30), 0, "auxblob"),
    ],
)
def test_tsm_failures_clean_up(tmp_path: Path, fake: FakeTsm, vmpl: int, message: str) -> None:
    provider = _tsm(tmp_path, fake)
    with pytest.raises(ProviderError, match=message):
        provider.get_report(REPORT_DATA, vmpl)
    assert list(provider.root.iterdir()) == []


def test_tsm_missing_root(tmp_path: Path) -> None:
    provider = ConfigfsTsmProvider(tmp_path / "absent")
    with pytest.raises(ProviderError, match="not available"):
        provider.get_report(REPORT_DATA)


@pytest.mark.parametrize(("data", "vmpl"), [(b"short", 0), (bytes(65), 0), (REPORT_DATA, 4)])
def test_bad_requests_are_refused_before_any_io(tmp_path: Path, data: bytes, vmpl: int) -> None:
    fake = FakeTsm()
    with pytest.raises(MalformedError):
        _tsm(tmp_path, fake).get_report(data, vmpl)
    assert fake.mkdirs == []
    device = SevGuestDeviceProvider(tmp_path / "nodev")
    with pytest.raises(MalformedError):
        device.get_report(data, vmpl)


def test_os_ops_read_write_and_bound(tmp_path: Path) -> None:
    ops = OsConfigfsOps()
    entry = tmp_path / "entry"
    ops.mkdir(entry)
    (entry / "inblob").touch()
    ops.write(entry / "inblob", REPORT_DATA)
    assert ops.read(entry / "inblob") == REPORT_DATA
    (entry / "outblob").write_bytes(b"x" * (32 * 1024 + 1))
    with pytest.raises(OSError, match="larger"):
        ops.read(entry / "outblob")
    for child in entry.iterdir():
        child.unlink()
    ops.rmdir(entry)
    assert not entry.exists()


# --- /dev/sev-guest: structures ----------------------------------------------------------


def test_uapi_struct_sizes_and_offsets() -> None:
    assert ctypes.sizeof(SnpReportReq) == 96
    assert ctypes.sizeof(SnpReportResp) == 4000
    assert ctypes.sizeof(SnpExtReportReq) == 112
    assert SnpExtReportReq.certs_address.offset == 96
    assert SnpExtReportReq.certs_len.offset == 104
    assert ctypes.sizeof(SnpGuestRequestIoctl) == 32
    assert SnpGuestRequestIoctl.msg_version.offset == 0
    assert SnpGuestRequestIoctl.req_data.offset == 8
    assert SnpGuestRequestIoctl.resp_data.offset == 16
    io = SnpGuestRequestIoctl(exitinfo2=(2 << 32) | 0x16)
    assert (io.fw_error, io.vmm_error) == (0x16, 2)
    assert bytes(io)[24:32] == struct.pack("<Q", (2 << 32) | 0x16)


def test_ioctl_numbers() -> None:
    # _IOWR('S', nr, struct snp_guest_request_ioctl): dir 3, size 32, type 0x53
    assert SNP_GET_REPORT == 0xC0205300
    assert SNP_GET_DERIVED_KEY == 0xC0205301
    assert SNP_GET_EXT_REPORT == 0xC0205302


def test_report_req_packing() -> None:
    req = SnpReportReq(vmpl=3)
    ctypes.memmove(req.user_data, REPORT_DATA, 64)
    raw = bytes(req)
    assert raw[:64] == REPORT_DATA
    assert raw[64:68] == struct.pack("<I", 3)
    assert raw[68:] == bytes(28)


def _response(status: int, report: bytes, size: int | None = None) -> bytes:
    header = struct.pack("<II", status, len(report) if size is None else size) + bytes(24)
    return (header + report).ljust(4000, b"\0")


def test_parse_report_response() -> None:
    report = fake_report(REPORT_DATA, 0)
    assert parse_report_response(_response(0, report)) == report
    with pytest.raises(ProviderError, match="INVALID_PARAMETERS"):
        parse_report_response(_response(0x16, report))
    with pytest.raises(ProviderError, match="INVALID_KEY_SELECTION"):
        parse_report_response(_response(0x27, report))
    with pytest.raises(ProviderError, match="does not fit"):
        parse_report_response(_response(0, report, size=4000))
    with pytest.raises(ProviderError, match="does not fit"):
        parse_report_response(_response(0, b"", size=0))
    with pytest.raises(ProviderError, match="too short"):
        parse_report_response(b"\0" * 16)


def test_decode_exitinfo2() -> None:
    assert "INVALID_LEN" in decode_exitinfo2(1 << 32)
    assert "BUSY" in decode_exitinfo2(2 << 32)
    assert "INVALID_PARAM" in decode_exitinfo2(0x16)
    assert "no firmware call" in decode_exitinfo2(0xFFFFFFFF)
    assert "unknown" in decode_exitinfo2(0x99)
    assert "VMM" not in decode_exitinfo2(0x16)


# --- /dev/sev-guest: emulated kernel -----------------------------------------------------


class FakeSevGuest:
    """An ``ioctl`` that does what the sev-guest driver does with the structures."""

    def __init__(
        self,
        *,
        certs: bytes = b"",
        needed: int | None = None,
        fail_exitinfo2: int | None = None,
        status: int = 0,
    ) -> None:
        self.certs = certs
        self.needed = needed  # certs_len the host asks for (INVALID_LEN path)
        self.fail_exitinfo2 = fail_exitinfo2
        self.status = status
        self.calls: list[tuple[int, int, int]] = []  # (request, msg_version, certs_len)

    def __call__(self, fd: int, request: int, io: SnpGuestRequestIoctl) -> None:
        assert fd >= 0
        if request == SNP_GET_EXT_REPORT:
            ext = SnpExtReportReq.from_address(io.req_data)
            req = ext.data
            self.calls.append((request, io.msg_version, ext.certs_len))
            if self.needed is not None and ext.certs_len < self.needed:
                ext.certs_len = self.needed
                io.exitinfo2 = 1 << 32
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        else:
            assert request == SNP_GET_REPORT
            ext = None
            req = SnpReportReq.from_address(io.req_data)
            self.calls.append((request, io.msg_version, 0))
        if self.fail_exitinfo2 is not None:
            io.exitinfo2 = self.fail_exitinfo2
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        report = fake_report(bytes(req.user_data), req.vmpl)
        resp = SnpReportResp.from_address(io.resp_data)
        ctypes.memmove(resp.data, _response(self.status, report), 4000)
        if ext is not None and self.certs:
            assert len(self.certs) <= ext.certs_len
            ctypes.memmove(ext.certs_address, self.certs, len(self.certs))
        io.exitinfo2 = 0


@pytest.fixture
def device(tmp_path: Path) -> Path:
    path = tmp_path / "sev-guest"
    path.write_bytes(b"")
    return path


def test_ext_report_with_buffer_retry(device: Path) -> None:
    certs = CertTable.from_named(vcek=VCEK, ask=ASK, ark=ARK).to_bytes(pad_to=4096)
    assert len(certs) == 8192
    fake = FakeSevGuest(certs=certs, needed=8192)
    provider = SevGuestDeviceProvider(device, certs_len=4096, ioctl=fake)
    assert isinstance(provider, ReportProvider)
    got = provider.get_report(REPORT_DATA, vmpl=1)
    assert fake.calls == [(SNP_GET_EXT_REPORT, 1, 4096), (SNP_GET_EXT_REPORT, 1, 8192)]
    assert got.report == fake_report(REPORT_DATA, 1)
    assert got.certs.vcek == VCEK and got.certs.ask == ASK
    assert got.provider == "sev-guest"


def test_ext_report_without_host_certs(device: Path) -> None:
    got = SevGuestDeviceProvider(device, ioctl=FakeSevGuest()).get_report(REPORT_DATA)
    assert len(got.certs) == 0


def test_plain_report(device: Path) -> None:
    fake = FakeSevGuest()
    got = SevGuestDeviceProvider(device, extended=False, ioctl=fake).get_report(REPORT_DATA, 3)
    assert fake.calls == [(SNP_GET_REPORT, 1, 0)]
    assert got.report == fake_report(REPORT_DATA, 3)


@pytest.mark.parametrize(
    ("fake", "message"),
    [
        (FakeSevGuest(fail_exitinfo2=0x16), "INVALID_PARAM"),
        (FakeSevGuest(fail_exitinfo2=2 << 32), "BUSY"),
        (FakeSevGuest(needed=0x5000), "beyond the kernel"),
        (FakeSevGuest(status=0x16), "INVALID_PARAMETERS"),
        (FakeSevGuest(certs=b"\x07" * 30), "certificate table"),
    ],
)
def test_ioctl_failures(device: Path, fake: FakeSevGuest, message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        SevGuestDeviceProvider(device, certs_len=4096, ioctl=fake).get_report(REPORT_DATA)


def test_bad_certs_len_is_refused(device: Path) -> None:
    for bad in (0, 100, 4097, 0x5000):
        with pytest.raises(MalformedError):
            SevGuestDeviceProvider(device, certs_len=bad)


def test_missing_device(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        SevGuestDeviceProvider(tmp_path / "sev-guest").get_report(REPORT_DATA)


def test_libc_ioctl_reports_errno() -> None:
    # /dev/null knows no SEV ioctls: ENOTTY, nothing written anywhere
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    provider = SevGuestDeviceProvider("/dev/null")
    with pytest.raises(ProviderError, match=r"SNP_GET_EXT_REPORT failed: .*errno 25"):
        provider.get_report(REPORT_DATA)
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        with pytest.raises(OSError) as exc:
            _libc_ioctl(fd, SNP_GET_REPORT, SnpGuestRequestIoctl())
        assert exc.value.errno == errno.ENOTTY
    finally:
        os.close(fd)
