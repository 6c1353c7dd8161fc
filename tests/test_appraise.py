"""Appraisal options (A1-A5 of attestation._appraise): every failure is collected."""

from __future__ import annotations

import pytest

from attestation import (
    AppraisalOptions,
    AttestationReport,
    GuestPolicy,
    MinimumTcb,
    PlatformInfo,
    appraise,
    appraise_or_raise,
)
from attestation._errors import AppraisalError, MalformedError
from attestation._types import Product, TcbVersion

TCB = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
MEASUREMENT = bytes(range(48))


def _report(**kw: object) -> AttestationReport:
    args: dict[str, object] = {
        "product": Product.MILAN,
        "version": 3,
        "current_tcb": TCB,
        "reported_tcb": TCB,
        "committed_tcb": TCB,
        "launch_tcb": TCB,
        "cpuid_fam_id": 0x19,
        "cpuid_mod_id": 0x01,
        "cpuid_step": 0x01,
        "measurement": MEASUREMENT,
        "host_data": b"\x01" * 32,
        "report_data": b"\x02" * 64,
        "family_id": b"\x03" * 16,
        "image_id": b"\x04" * 16,
        "guest_svn": 5,
        "vmpl": 0,
        "policy": GuestPolicy(abi_major=1, abi_minor=55),
    }
    args.update(kw)
    return AttestationReport(**args)  # type: ignore[arg-type]


def test_empty_options_accept_anything() -> None:
    assert appraise(_report(policy=GuestPolicy(debug=True, smt=True)), AppraisalOptions()) == []


def test_all_matching_options_pass() -> None:
    options = AppraisalOptions(
        allowed_measurements=frozenset({MEASUREMENT, bytes(48)}),
        host_data=b"\x01" * 32,
        report_data=b"\x02" * 64,
        family_id=b"\x03" * 16,
        image_id=b"\x04" * 16,
        min_tcb=MinimumTcb(bootloader=3, tee=0, snp=8, microcode=115),
        forbid_debug=True,
        forbid_migration_agent=True,
        smt_allowed=False,
        vmpl=0,
        min_report_version=3,
        min_guest_svn=5,
    )
    assert appraise(_report(), options) == []
    appraise_or_raise(_report(), options)


def test_every_failure_is_collected() -> None:
    report = _report(
        policy=GuestPolicy(debug=True, migrate_ma=True, smt=True),
        platform_info=PlatformInfo(smt_enabled=True),
        vmpl=2,
        guest_svn=1,
    )
    options = AppraisalOptions(
        allowed_measurements=frozenset({bytes(48)}),
        host_data=bytes(32),
        report_data=bytes(64),
        family_id=bytes(16),
        image_id=bytes(16),
        min_tcb=MinimumTcb(snp=9, microcode=200),
        forbid_debug=True,
        forbid_migration_agent=True,
        smt_allowed=False,
        vmpl=0,
        min_report_version=5,
        min_guest_svn=2,
    )
    failures = appraise(report, options)
    joined = "\n".join(failures)
    for needle in (
        "MEASUREMENT",
        "HOST_DATA",
        "REPORT_DATA",
        "FAMILY_ID",
        "IMAGE_ID",
        "snp 8 < minimum 9",
        "microcode 115 < minimum 200",
        "POLICY.DEBUG",
        "POLICY.MIGRATE_MA",
        "POLICY.SMT",
        "PLATFORM_INFO.SMT_EN",
        "VMPL 2",
        "VERSION 3 < minimum 5",
        "GUEST_SVN 1 < minimum 2",
    ):
        assert needle in joined, needle
    assert len(failures) == 14
    with pytest.raises(AppraisalError) as info:
        appraise_or_raise(report, options)
    assert info.value.failures == failures


def test_fmc_minimum_on_milan_fails_clearly() -> None:
    failures = appraise(_report(), AppraisalOptions(min_tcb=MinimumTcb(fmc=1)))
    assert failures == ["REPORTED_TCB has no fmc component (minimum 1)"]


def test_false_flags_mean_unchecked() -> None:
    report = _report(policy=GuestPolicy(debug=True, migrate_ma=True, smt=True))
    options = AppraisalOptions(forbid_debug=False, forbid_migration_agent=False, smt_allowed=True)
    assert appraise(report, options) == []


def test_from_toml_full() -> None:
    text = f"""
allowed_measurements = ["{MEASUREMENT.hex()}"]
host_data = "{"01" * 32}"
report_data = "{"02" * 64}"
family_id = "{"03" * 16}"
image_id = "{"04" * 16}"
forbid_debug = true
forbid_migration_agent = true
smt_allowed = false
vmpl = 0
min_report_version = 2
min_guest_svn = 5

[min_tcb]
bootloader = 3
snp = 8
"""
    options = AppraisalOptions.from_toml(text)
    assert options.allowed_measurements == frozenset({MEASUREMENT})
    assert options.min_tcb == MinimumTcb(bootloader=3, snp=8)
    assert appraise(_report(), options) == []
    assert AppraisalOptions.from_toml(text.encode()) == options


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("forbid_debugging = true", "unknown appraisal option 'forbid_debugging'"),
        ("[min_tcb]\nucode = 1", "unknown min_tcb key 'ucode'"),
        ('host_data = "00"', "host_data must be 32 bytes"),
        ('host_data = "zz"', "host_data must be hex"),
        ("host_data = 5", "host_data must be a hex string"),
        ('allowed_measurements = "00"', "must be a list"),
        ('allowed_measurements = ["00"]', "48 bytes"),
        ('forbid_debug = "yes"', "forbid_debug must be true or false"),
        ("vmpl = 4", "vmpl must be an integer 0..3"),
        ("vmpl = true", "vmpl must be an integer"),
        ("min_guest_svn = -1", "min_guest_svn"),
        ("[min_tcb]\nsnp = 256", r"min_tcb.snp must be an integer 0..255"),
        ("min_tcb = 3", "min_tcb must be a table"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_from_toml_strict(text: str, match: str) -> None:
    with pytest.raises(MalformedError, match=match):
        AppraisalOptions.from_toml(text)


def test_constructor_validates() -> None:
    with pytest.raises(MalformedError, match="report_data must be 64 bytes"):
        AppraisalOptions(report_data=b"x")
    with pytest.raises(MalformedError, match="set of 48-byte values"):
        AppraisalOptions(allowed_measurements=b"x" * 48)  # type: ignore[arg-type]
    with pytest.raises(MalformedError, match="MinimumTcb"):
        AppraisalOptions(min_tcb={"snp": 1})  # type: ignore[arg-type]
