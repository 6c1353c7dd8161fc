"""Expected SEV-SNP launch MEASUREMENT of a guest, computed with ``sev-snp-measure``.

The operator registers the measurement an enclave VM must report; the simulated platform
reports the same value for the same launch artifacts. Both come from here.

What is measured (SEV-SNP Firmware ABI, AMD pub. 56860, section 8.17 SNP_LAUNCH_UPDATE and
appendix "Measurement"; the page-by-page digest is implemented by ``sevsnpmeasure``):

1. the firmware volume (OVMF), mapped so that it ends at 4 GiB, page by page;
2. the pages its SEV metadata (``OVMF_SEV_META_DATA_GUID``) declares: zero pages, the
   secrets page, the CPUID page, and, when a kernel is booted directly, the page holding
   the SEV hashes table (SHA-256 of kernel, initrd and command line, as QEMU builds it);
3. one VMSA page per vCPU, which depends on the vCPU signature (vCPU type), the guest
   features (SEV_FEATURES) and the VMM.

Checks made here before trusting the library's result (fail closed):

1. the firmware carries SEV metadata; a build without it (e.g. Debian's
   ``OVMF_CODE_4M.fd``) cannot launch an SNP guest, yet ``sev-snp-measure`` would still
   return a digest for it;
2. a kernel is only accepted when the firmware declares an ``SNP_KERNEL_HASHES`` section
   (Debian's ``OVMF_CODE.fd`` has SNP metadata but no such section: direct kernel boot is
   not measurable with it, only firmware-only launches);
3. every file's SHA-256 is taken when the artifacts are described and checked again after
   measuring, so the measurement belongs to exactly the recorded files.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestation._errors import MalformedError

__all__ = [
    "MEASUREMENT_SIZE",
    "FileDigest",
    "FirmwareInfo",
    "LaunchArtifacts",
    "VmmType",
    "firmware_info",
    "launch_measurement",
    "vcpu_types",
]

MEASUREMENT_SIZE = 48
DEFAULT_VCPU_TYPE = "EPYC-v4"
# SEV_FEATURES bit 0 (SNPActive); the default of sev-snp-measure and of QEMU's SNP guests.
DEFAULT_GUEST_FEATURES = 0x1
_MAX_VCPUS = 512


class VmmType(enum.Enum):
    """The virtual machine monitor whose launch sequence is reproduced."""

    QEMU = "QEMU"
    EC2 = "ec2"
    GCE = "gce"

    @classmethod
    def parse(cls, text: str) -> VmmType:
        for vmm in cls:
            if vmm.value.lower() == text.strip().lower():
                return vmm
        raise MalformedError(f"unknown VMM type {text!r}; expected QEMU, ec2 or gce")


def vcpu_types() -> list[str]:
    """The vCPU type names ``sev-snp-measure`` knows (QEMU's CPU model names)."""
    from sevsnpmeasure import vcpu_types as vt

    return list(vt.CPU_SIGS)


@dataclass(frozen=True, slots=True)
class FileDigest:
    """A launch input file as recorded: its path, size and SHA-256."""

    path: Path
    size: int
    sha256: bytes

    def __post_init__(self) -> None:
        if len(self.sha256) != 32:
            raise MalformedError("FileDigest.sha256 must be 32 bytes")

    @classmethod
    def of(cls, path: Path | str) -> FileDigest:
        """Hash the file now."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise MalformedError(f"cannot read {p}: {exc.strerror or exc}") from exc
        return cls(path=p, size=len(data), sha256=hashlib.sha256(data).digest())

    def check(self) -> None:
        """Fail when the file is no longer the one recorded."""
        now = FileDigest.of(self.path)
        if now.sha256 != self.sha256 or now.size != self.size:
            raise MalformedError(f"{self.path} changed since it was recorded")

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "sha256": self.sha256.hex()}


@dataclass(frozen=True, slots=True)
class LaunchArtifacts:
    """Everything that determines an SNP guest's launch measurement.

    Build with :meth:`from_files`, which validates the parameters and records a digest of
    each file.
    """

    ovmf: FileDigest
    kernel: FileDigest | None = None
    initrd: FileDigest | None = None
    append: str | None = None
    vcpus: int = 1
    vcpu_type: str = DEFAULT_VCPU_TYPE
    guest_features: int = DEFAULT_GUEST_FEATURES
    vmm: VmmType = VmmType.QEMU

    def __post_init__(self) -> None:
        from sevsnpmeasure import vcpu_types as vt

        if not 1 <= self.vcpus <= _MAX_VCPUS:
            raise MalformedError(f"vcpus must be 1..{_MAX_VCPUS}, got {self.vcpus}")
        if self.vcpu_type not in vt.CPU_SIGS:
            raise MalformedError(
                f"unknown vCPU type {self.vcpu_type!r}; known: {', '.join(vt.CPU_SIGS)}"
            )
        if not 0 <= self.guest_features < 1 << 64:
            raise MalformedError("guest_features must fit in 64 bits")
        if (self.initrd is not None or self.append is not None) and self.kernel is None:
            raise MalformedError("an initrd or a command line needs a kernel")
        if self.append is not None and "\x00" in self.append:
            raise MalformedError("the kernel command line must not contain NUL")

    @classmethod
    def from_files(
        cls,
        ovmf: Path | str,
        *,
        kernel: Path | str | None = None,
        initrd: Path | str | None = None,
        append: str | None = None,
        vcpus: int = 1,
        vcpu_type: str = DEFAULT_VCPU_TYPE,
        guest_features: int = DEFAULT_GUEST_FEATURES,
        vmm: VmmType = VmmType.QEMU,
    ) -> LaunchArtifacts:
        """Describe a launch, hashing each file."""
        return cls(
            ovmf=FileDigest.of(ovmf),
            kernel=FileDigest.of(kernel) if kernel is not None else None,
            initrd=FileDigest.of(initrd) if initrd is not None else None,
            append=append,
            vcpus=vcpus,
            vcpu_type=vcpu_type,
            guest_features=guest_features,
            vmm=vmm,
        )

    @property
    def vcpu_sig(self) -> int:
        """The CPUID signature (family/model/stepping) the VMSAs carry."""
        from sevsnpmeasure import vcpu_types as vt

        return int(vt.CPU_SIGS[self.vcpu_type])

    def files(self) -> list[FileDigest]:
        return [f for f in (self.ovmf, self.kernel, self.initrd) if f is not None]

    def to_json(self) -> dict[str, Any]:
        """A record of the inputs (paths, sizes, SHA-256), e.g. for registration."""
        return {
            "ovmf": self.ovmf.to_json(),
            "kernel": self.kernel.to_json() if self.kernel else None,
            "initrd": self.initrd.to_json() if self.initrd else None,
            "append": self.append,
            "vcpus": self.vcpus,
            "vcpu_type": self.vcpu_type,
            "vcpu_sig": f"{self.vcpu_sig:#x}",
            "guest_features": f"{self.guest_features:#x}",
            "vmm": self.vmm.value,
        }


@dataclass(frozen=True, slots=True)
class FirmwareInfo:
    """What the firmware's OVMF footer table declares for SEV."""

    has_sev_metadata: bool
    sections: tuple[str, ...]
    kernel_hashes: bool


def firmware_info(ovmf: Path | str) -> FirmwareInfo:
    """Parse the firmware's footer table and SEV metadata (no measurement)."""
    from sevsnpmeasure.ovmf import OVMF, SectionType

    try:
        fw = OVMF(str(ovmf))
    except OSError as exc:
        raise MalformedError(f"cannot read firmware {ovmf}: {exc.strerror or exc}") from exc
    except (RuntimeError, ValueError) as exc:
        raise MalformedError(f"firmware {ovmf}: {exc}") from exc
    try:
        sections = tuple(item.section_type().name for item in fw.metadata_items())
    except ValueError as exc:
        raise MalformedError(f"firmware {ovmf}: unknown SEV metadata section: {exc}") from exc
    try:
        fw.table_item(OVMF.OVMF_SEV_META_DATA_GUID)
        has_meta = True
    except KeyError:
        has_meta = False
    return FirmwareInfo(
        has_sev_metadata=has_meta,
        sections=sections,
        kernel_hashes=fw.has_metadata_section(SectionType.SNP_KERNEL_HASHES),
    )


def launch_measurement(artifacts: LaunchArtifacts) -> bytes:
    """The 48-byte SNP launch digest (the report's MEASUREMENT) for these artifacts."""
    from sevsnpmeasure import guest
    from sevsnpmeasure.sev_mode import SevMode
    from sevsnpmeasure.vmm_types import VMMType

    # Check 1: the firmware is SNP-capable (whole pages, SEV metadata present).
    if artifacts.ovmf.size == 0 or artifacts.ovmf.size % 4096:
        raise MalformedError(
            f"firmware {artifacts.ovmf.path} is {artifacts.ovmf.size} bytes, "
            "not a whole number of 4 KiB pages"
        )
    info = firmware_info(artifacts.ovmf.path)
    if not info.has_sev_metadata:
        raise MalformedError(
            f"firmware {artifacts.ovmf.path} has no SEV metadata (OVMF_SEV_META_DATA_GUID): "
            "it cannot launch an SEV-SNP guest"
        )
    # Check 2: direct kernel boot needs a measured hashes page.
    if artifacts.kernel is not None and not info.kernel_hashes:
        raise MalformedError(
            f"firmware {artifacts.ovmf.path} declares no SNP_KERNEL_HASHES section: "
            "a directly booted kernel/initrd/command line cannot be measured with it "
            "(use an AmdSev OVMF build)"
        )
    vmm = {VmmType.QEMU: VMMType.QEMU, VmmType.EC2: VMMType.ec2, VmmType.GCE: VMMType.gce}[
        artifacts.vmm
    ]
    try:
        digest = guest.calc_launch_digest(
            SevMode.SEV_SNP,
            artifacts.vcpus,
            artifacts.vcpu_sig,
            str(artifacts.ovmf.path),
            str(artifacts.kernel.path) if artifacts.kernel else None,
            str(artifacts.initrd.path) if artifacts.initrd else None,
            artifacts.append,
            artifacts.guest_features,
            "",
            vmm,
        )
    except OSError as exc:
        raise MalformedError(f"cannot read launch artifact: {exc}") from exc
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise MalformedError(f"cannot measure launch: {exc}") from exc
    # Check 3: the files measured are the files recorded.
    for f in artifacts.files():
        f.check()
    out = bytes(digest)
    if len(out) != MEASUREMENT_SIZE:  # pragma: no cover - library contract
        raise MalformedError(f"sev-snp-measure returned {len(out)} bytes, expected 48")
    return out
