"""Appraisal of an (authentic) attestation report against simple options.

Authenticity (``attestation._verify``) says who signed the report; appraisal says
whether its contents are acceptable. Every option is unchecked when ``None``; all
failures are collected, never just the first. The full appraisal *document* (with
digests, per-product TCB floors, endpoints) belongs to the ``policies`` package; this is
the small, strict core it can build on, also loadable from a TOML file for
``pmc2 snp verify --policy FILE``.

Checks (report fields per SEV-SNP ABI spec 56860, Table 23 and Table 9):

A1. ``allowed_measurements``: MEASUREMENT is one of the given 48-byte values.
A2. ``host_data`` (32 bytes), ``report_data`` (64 bytes), ``family_id``, ``image_id``
    (16 bytes each): equal.
A3. ``min_tcb``: each given component of REPORTED_TCB (the TCB the VCEK endorses) is at
    least the minimum (bootloader, tee, snp, microcode, fmc).
A4. ``forbid_debug``: POLICY.DEBUG clear. ``forbid_migration_agent``: POLICY.MIGRATE_MA
    clear. ``smt_allowed = false``: POLICY.SMT clear and PLATFORM_INFO.SMT_EN clear.
A5. ``vmpl``: VMPL equal. ``min_report_version``: VERSION at least.
    ``min_guest_svn``: GUEST_SVN at least.

TOML form (every key optional; unknown keys are rejected, naming the key)::

    allowed_measurements = ["<96 hex>", ...]
    host_data = "<64 hex>"
    report_data = "<128 hex>"
    family_id = "<32 hex>"
    image_id = "<32 hex>"
    forbid_debug = true
    forbid_migration_agent = true
    smt_allowed = false
    vmpl = 0
    min_report_version = 2
    min_guest_svn = 0

    [min_tcb]          # any subset of the components
    bootloader = 2
    tee = 0
    snp = 5
    microcode = 68
    fmc = 0            # Turin only
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from attestation._abi import AttestationReport
from attestation._errors import AppraisalError, MalformedError

__all__ = ["AppraisalOptions", "MinimumTcb", "appraise", "appraise_or_raise"]

_TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")


@dataclass(frozen=True, slots=True)
class MinimumTcb:
    """Per-component minimum of REPORTED_TCB; ``None`` components are unchecked."""

    bootloader: int | None = None
    tee: int | None = None
    snp: int | None = None
    microcode: int | None = None
    fmc: int | None = None

    def __post_init__(self) -> None:
        for name in _TCB_COMPONENTS:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255
            ):
                raise MalformedError(f"min_tcb.{name} must be an integer 0..255, got {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> MinimumTcb:
        """From ``{"bootloader": 2, ...}``; unknown components are rejected."""
        unknown = sorted(set(data) - set(_TCB_COMPONENTS))
        if unknown:
            raise MalformedError(
                f"unknown min_tcb key {unknown[0]!r}; allowed: {', '.join(_TCB_COMPONENTS)}"
            )
        return cls(**dict(data))

    def components(self) -> dict[str, int]:
        """The set components."""
        return {n: v for n in _TCB_COMPONENTS if (v := getattr(self, n)) is not None}


def _hex_bytes(key: str, value: Any, size: int) -> bytes:
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise MalformedError(f"{key} must be hex, got {value!r}") from None
    else:
        raise MalformedError(f"{key} must be a hex string, got {type(value).__name__}")
    if len(raw) != size:
        raise MalformedError(f"{key} must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return raw


def _opt_int(key: str, value: Any, lo: int, hi: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise MalformedError(f"{key} must be an integer {lo}..{hi}, got {value!r}")
    return value


def _opt_bool(key: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise MalformedError(f"{key} must be true or false, got {value!r}")


@dataclass(frozen=True, slots=True)
class AppraisalOptions:
    """What an acceptable report looks like; each ``None`` option is unchecked (A1-A5)."""

    allowed_measurements: frozenset[bytes] | None = None
    host_data: bytes | None = None
    report_data: bytes | None = None
    family_id: bytes | None = None
    image_id: bytes | None = None
    min_tcb: MinimumTcb | None = None
    forbid_debug: bool | None = None
    forbid_migration_agent: bool | None = None
    smt_allowed: bool | None = None
    vmpl: int | None = None
    min_report_version: int | None = None
    min_guest_svn: int | None = None

    def __post_init__(self) -> None:
        given: Any = self.allowed_measurements
        if given is not None:
            if isinstance(given, bytes | str):
                raise MalformedError("allowed_measurements must be a set of 48-byte values")
            values = frozenset(_hex_bytes("allowed_measurements[]", m, 48) for m in given)
            object.__setattr__(self, "allowed_measurements", values)
        for key, size in (
            ("host_data", 32),
            ("report_data", 64),
            ("family_id", 16),
            ("image_id", 16),
        ):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, _hex_bytes(key, value, size))
        if self.min_tcb is not None and not isinstance(self.min_tcb, MinimumTcb):
            raise MalformedError("min_tcb must be a MinimumTcb")
        for key in ("forbid_debug", "forbid_migration_agent", "smt_allowed"):
            _opt_bool(key, getattr(self, key))
        _opt_int("vmpl", self.vmpl, 0, 3)
        _opt_int("min_report_version", self.min_report_version, 0, 0xFFFFFFFF)
        _opt_int("min_guest_svn", self.min_guest_svn, 0, 0xFFFFFFFF)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AppraisalOptions:
        """From a parsed TOML/JSON mapping (hex strings for byte values); strict."""
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise MalformedError(
                    f"unknown appraisal option {key!r}; allowed: {', '.join(sorted(known))}"
                )
        kwargs: dict[str, Any] = dict(data)
        if "allowed_measurements" in kwargs:
            ms = kwargs["allowed_measurements"]
            if not isinstance(ms, list):
                raise MalformedError("allowed_measurements must be a list of hex strings")
            kwargs["allowed_measurements"] = frozenset(
                _hex_bytes("allowed_measurements[]", m, 48) for m in ms
            )
        if "min_tcb" in kwargs:
            table = kwargs["min_tcb"]
            if not isinstance(table, Mapping):
                raise MalformedError("min_tcb must be a table")
            kwargs["min_tcb"] = MinimumTcb.from_mapping(table)
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, text: str | bytes) -> AppraisalOptions:
        """Parse the TOML form documented in the module docstring."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedError("appraisal options file is not UTF-8") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MalformedError(f"appraisal options are not valid TOML: {exc}") from None
        return cls.from_mapping(data)


def _hexes(values: Iterable[bytes]) -> str:
    return ", ".join(sorted(v.hex()[:16] + "..." for v in values))


def appraise(report: AttestationReport, options: AppraisalOptions) -> list[str]:
    """Every way ``report`` fails ``options`` (empty when acceptable); checks A1-A5."""
    failures: list[str] = []
    o = options
    # A1
    if o.allowed_measurements is not None and report.measurement not in o.allowed_measurements:
        failures.append(
            f"MEASUREMENT {report.measurement.hex()} is not allowed "
            f"(allowed: {_hexes(o.allowed_measurements) or 'none'})"
        )
    # A2
    for key, label in (
        ("host_data", "HOST_DATA"),
        ("report_data", "REPORT_DATA"),
        ("family_id", "FAMILY_ID"),
        ("image_id", "IMAGE_ID"),
    ):
        want = getattr(o, key)
        got = getattr(report, key)
        if want is not None and got != want:
            failures.append(f"{label} {got.hex()} != expected {want.hex()}")
    # A3
    if o.min_tcb is not None:
        have = report.reported_tcb.components()
        for name, minimum in o.min_tcb.components().items():
            if name not in have:
                failures.append(f"REPORTED_TCB has no {name} component (minimum {minimum})")
            elif have[name] < minimum:
                failures.append(f"REPORTED_TCB {name} {have[name]} < minimum {minimum}")
    # A4
    if o.forbid_debug and report.policy.debug:
        failures.append("POLICY.DEBUG is set (debugging allowed) but debug is forbidden")
    if o.forbid_migration_agent and report.policy.migrate_ma:
        failures.append("POLICY.MIGRATE_MA is set but a migration agent is forbidden")
    if o.smt_allowed is False:
        if report.policy.smt:
            failures.append("POLICY.SMT is set but SMT is not allowed")
        if report.platform_info.smt_enabled:
            failures.append("PLATFORM_INFO.SMT_EN is set but SMT is not allowed")
    # A5
    if o.vmpl is not None and report.vmpl != o.vmpl:
        failures.append(f"VMPL {report.vmpl} != expected {o.vmpl}")
    if o.min_report_version is not None and report.version < o.min_report_version:
        failures.append(f"report VERSION {report.version} < minimum {o.min_report_version}")
    if o.min_guest_svn is not None and report.guest_svn < o.min_guest_svn:
        failures.append(f"GUEST_SVN {report.guest_svn} < minimum {o.min_guest_svn}")
    return failures


def appraise_or_raise(report: AttestationReport, options: AppraisalOptions) -> None:
    """Like :func:`appraise` but raises :class:`AppraisalError` listing every failure."""
    failures = appraise(report, options)
    if failures:
        raise AppraisalError(failures)
