"""The appraisal policy: which SEV-SNP evidence the attestation service accepts.

Document (``schema = "pmc2/appraisal/v1"``; keys other than these are rejected)::

    schema = "pmc2/appraisal/v1"
    accept = "registered"          # or "listed": only the [[reference_values]] below
    forbid_debug = true            # guest POLICY.DEBUG must be 0            (default true)
    forbid_migration_agent = true  # guest POLICY.MIGRATE_MA must be 0       (default true)
    smt_allowed = true             # false: PLATFORM_INFO.SMT_EN must be 0   (default true)
    vmpl = 0                       # report VMPL must equal this    (absent: not checked)
    minimum_report_version = 2     # report VERSION at least this            (default 2)
    minimum_guest_svn = 0          # report GUEST_SVN at least this          (default 0)
    family_id = "<16 bytes hex>"   # report FAMILY_ID must equal    (absent: not checked)
    image_id = "<16 bytes hex>"    # report IMAGE_ID must equal     (absent: not checked)
    token_lifetime_seconds = 3600  # attestation-result token lifetime, 60 .. 86400

    [minimum_tcb]                  # reported TCB at least this, per component (default 0)
    bootloader = 0
    tee = 0
    snp = 0
    microcode = 0
    # fmc = 0                      # Turin only; when set, a TCB without FMC fails

    [[reference_values]]           # only with accept = "listed", at least one
    measurement = "<48 bytes hex>" # launch MEASUREMENT
    host_data = "<32 bytes hex>"   # optional: HOST_DATA (the launch-configuration digest)
    label = "enclave v1"

Field numbers refer to the SEV-SNP Firmware ABI Specification (AMD 56860), Table 23
"ATTESTATION_REPORT Structure", and the guest policy of section 4.3.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

from policies._canon import JsonValue
from policies._document import Document
from policies._errors import PolicyError, PolicyParseError
from policies._reader import Table, parse_hex, parse_label

if TYPE_CHECKING:
    from attestation import AppraisalOptions
    from attestation import MinimumTcb as AttestationMinimumTcb

__all__ = ["AcceptMode", "AppraisalPolicy", "MinimumTcb", "ReferenceValue"]

MEASUREMENT_SIZE = 48
HOST_DATA_SIZE = 32
ID_SIZE = 16
U32_MAX = 2**32 - 1
TOKEN_LIFETIME_RANGE = (60, 86400)


class AcceptMode(enum.Enum):
    """Where the accepted reference values come from."""

    REGISTERED = "registered"
    """Any reference value registered at the attestation service (and not revoked)."""
    LISTED = "listed"
    """Only the reference values listed in the policy itself."""


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """An accepted launch: measurement, optionally HOST_DATA, and a label for audit."""

    measurement: bytes
    label: str
    host_data: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.measurement) != MEASUREMENT_SIZE:
            raise PolicyError(f"measurement must be {MEASUREMENT_SIZE} bytes")
        if self.host_data is not None and len(self.host_data) != HOST_DATA_SIZE:
            raise PolicyError(f"host_data must be {HOST_DATA_SIZE} bytes")
        parse_label("label", self.label)

    def matches(self, measurement: bytes, host_data: bytes) -> bool:
        """Whether a report's MEASUREMENT and HOST_DATA satisfy this reference value."""
        if measurement != self.measurement:
            return False
        return self.host_data is None or host_data == self.host_data

    def to_dict(self) -> dict[str, JsonValue]:
        """The canonical value."""
        out: dict[str, JsonValue] = {"measurement": self.measurement.hex()}
        if self.host_data is not None:
            out["host_data"] = self.host_data.hex()
        out["label"] = self.label
        return out


@dataclass(frozen=True, slots=True)
class MinimumTcb:
    """Minimum security patch level per TCB component (``fmc`` only on Turin)."""

    bootloader: int = 0
    tee: int = 0
    snp: int = 0
    microcode: int = 0
    fmc: int | None = None

    def __post_init__(self) -> None:
        for name, value in self.components().items():
            if not 0 <= value <= 0xFF:
                raise PolicyError(f"minimum_tcb.{name}={value} outside 0 .. 255")

    def components(self) -> dict[str, int]:
        """Named components (``fmc`` only when set)."""
        out = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out

    def to_attestation(self) -> AttestationMinimumTcb:
        """The evidence library's ``attestation.MinimumTcb`` (check A3) with these minima."""
        from attestation import MinimumTcb as AttestationMinimumTcb

        return AttestationMinimumTcb(
            bootloader=self.bootloader,
            tee=self.tee,
            snp=self.snp,
            microcode=self.microcode,
            fmc=self.fmc,
        )


@dataclass(frozen=True, slots=True)
class AppraisalPolicy(Document):
    """A parsed appraisal policy (see the module docstring for the document)."""

    KIND: ClassVar[str] = "appraisal"
    SCHEMA: ClassVar[str] = "pmc2/appraisal/v1"

    accept: AcceptMode
    reference_values: tuple[ReferenceValue, ...] = ()
    minimum_tcb: MinimumTcb = field(default_factory=MinimumTcb)
    forbid_debug: bool = True
    forbid_migration_agent: bool = True
    smt_allowed: bool = True
    vmpl: int | None = None
    minimum_report_version: int = 2
    minimum_guest_svn: int = 0
    family_id: bytes | None = None
    image_id: bytes | None = None
    token_lifetime_seconds: int = 3600

    def __post_init__(self) -> None:
        if self.accept is AcceptMode.LISTED and not self.reference_values:
            raise PolicyError('accept = "listed" needs at least one reference value')
        if self.accept is AcceptMode.REGISTERED and self.reference_values:
            raise PolicyError('accept = "registered" takes no reference values')
        seen: set[tuple[bytes, bytes | None]] = set()
        for value in self.reference_values:
            key = (value.measurement, value.host_data)
            if key in seen:
                raise PolicyError(f"duplicate reference value {value.measurement.hex()}")
            seen.add(key)
        if self.vmpl is not None and not 0 <= self.vmpl <= 3:
            raise PolicyError(f"vmpl {self.vmpl} outside 0 .. 3")
        for name in ("minimum_report_version", "minimum_guest_svn"):
            if not 0 <= getattr(self, name) <= U32_MAX:
                raise PolicyError(f"{name} outside 0 .. 2**32-1")
        for name in ("family_id", "image_id"):
            value = getattr(self, name)
            if value is not None and len(value) != ID_SIZE:
                raise PolicyError(f"{name} must be {ID_SIZE} bytes")
        low, high = TOKEN_LIFETIME_RANGE
        if not low <= self.token_lifetime_seconds <= high:
            raise PolicyError(f"token_lifetime_seconds outside {low} .. {high}")

    # -- parsing ---------------------------------------------------------------------------

    @classmethod
    def _from_table(cls, data: Mapping[str, Any]) -> Self:
        t = cls._open(
            data,
            cls.KIND,
            (
                "accept",
                "reference_values",
                "minimum_tcb",
                "forbid_debug",
                "forbid_migration_agent",
                "smt_allowed",
                "vmpl",
                "minimum_report_version",
                "minimum_guest_svn",
                "family_id",
                "image_id",
                "token_lifetime_seconds",
            ),
        )
        accept_text = t.string("accept")
        try:
            accept = AcceptMode(accept_text)
        except ValueError:
            raise t.error(
                "accept", f'expected "registered" or "listed", got {accept_text!r}'
            ) from None
        values = _reference_values(t, accept)
        tcb = _minimum_tcb(t.table("minimum_tcb", _TCB_KEYS, required=False))
        low, high = TOKEN_LIFETIME_RANGE
        vmpl = t.opt_integer("vmpl", minimum=0, maximum=3)
        report_version = t.opt_integer("minimum_report_version", minimum=0, maximum=U32_MAX)
        guest_svn = t.opt_integer("minimum_guest_svn", minimum=0, maximum=U32_MAX)
        lifetime = t.opt_integer("token_lifetime_seconds", minimum=low, maximum=high)
        return cls(
            accept=accept,
            reference_values=values,
            minimum_tcb=tcb,
            forbid_debug=t.boolean("forbid_debug", default=True),
            forbid_migration_agent=t.boolean("forbid_migration_agent", default=True),
            smt_allowed=t.boolean("smt_allowed", default=True),
            vmpl=vmpl,
            minimum_report_version=2 if report_version is None else report_version,
            minimum_guest_svn=0 if guest_svn is None else guest_svn,
            family_id=_optional_hex(t, "family_id", ID_SIZE),
            image_id=_optional_hex(t, "image_id", ID_SIZE),
            token_lifetime_seconds=3600 if lifetime is None else lifetime,
        )

    # -- canonical form --------------------------------------------------------------------

    def to_dict(self) -> dict[str, JsonValue]:
        """The canonical value (see ``policies._canon``)."""
        out: dict[str, JsonValue] = {"schema": self.SCHEMA, "accept": self.accept.value}
        out["forbid_debug"] = self.forbid_debug
        out["forbid_migration_agent"] = self.forbid_migration_agent
        out["smt_allowed"] = self.smt_allowed
        if self.vmpl is not None:
            out["vmpl"] = self.vmpl
        out["minimum_report_version"] = self.minimum_report_version
        out["minimum_guest_svn"] = self.minimum_guest_svn
        if self.family_id is not None:
            out["family_id"] = self.family_id.hex()
        if self.image_id is not None:
            out["image_id"] = self.image_id.hex()
        out["token_lifetime_seconds"] = self.token_lifetime_seconds
        out["minimum_tcb"] = dict(self.minimum_tcb.components())
        if self.reference_values:
            out["reference_values"] = [value.to_dict() for value in self.reference_values]
        return out

    # -- use -------------------------------------------------------------------------------

    def accepted_reference_values(
        self, registered: Iterable[ReferenceValue]
    ) -> tuple[ReferenceValue, ...]:
        """The reference values to accept: ``registered`` or the policy's own list.

        ``registered`` are the attestation service's current (unrevoked, unexpired)
        registrations; they are ignored when ``accept = "listed"``.
        """
        if self.accept is AcceptMode.LISTED:
            return self.reference_values
        return tuple(registered)

    def match_reference_value(
        self, measurement: bytes, host_data: bytes, registered: Iterable[ReferenceValue]
    ) -> ReferenceValue | None:
        """The first accepted reference value a report's MEASUREMENT / HOST_DATA match."""
        for value in self.accepted_reference_values(registered):
            if value.matches(measurement, host_data):
                return value
        return None

    def appraisal_options(
        self,
        registered: Iterable[ReferenceValue],
        *,
        measurement: bytes,
        host_data: bytes,
        report_data: bytes | None = None,
    ) -> AppraisalOptions:
        """The evidence library's ``AppraisalOptions`` for one report under this policy.

        ``measurement`` and ``host_data`` are the report's MEASUREMENT and HOST_DATA;
        ``registered`` the service's current registrations (used when ``accept =
        "registered"``); ``report_data`` the expected REPORT_DATA (hash of nonce and key),
        checked when given. ``attestation.appraise(report, options)`` then lists every
        failure. The options never leave the measurement unchecked:

        1. the accepted reference values are ``accepted_reference_values(registered)``;
        2. if one matches the report (``match_reference_value``), the options allow its
           measurement and, when it pins HOST_DATA, require that HOST_DATA;
        3. else if some accepted value has the report's measurement (so its HOST_DATA pin
           differs), the options require the first such value's HOST_DATA, so the
           appraisal fails naming HOST_DATA;
        4. else the options allow exactly the accepted measurements (possibly none), so
           the appraisal fails naming MEASUREMENT;
        5. every other field of the policy maps one to one: minimum TCB (A3), debug and
           migration agent forbidden, SMT (A4), VMPL, minimum report version and guest
           SVN (A5), FAMILY_ID and IMAGE_ID (A2).
        """
        from attestation import AppraisalOptions

        accepted = self.accepted_reference_values(registered)
        match = next((v for v in accepted if v.matches(measurement, host_data)), None)
        pinned: bytes | None = None
        if match is not None:
            allowed = frozenset({match.measurement})
            pinned = match.host_data
        else:
            same = [value for value in accepted if value.measurement == measurement]
            if same:
                allowed = frozenset({measurement})
                pinned = same[0].host_data
            else:
                allowed = frozenset(value.measurement for value in accepted)
        return AppraisalOptions(
            allowed_measurements=allowed,
            host_data=pinned,
            report_data=report_data,
            family_id=self.family_id,
            image_id=self.image_id,
            min_tcb=self.minimum_tcb.to_attestation(),
            forbid_debug=self.forbid_debug,
            forbid_migration_agent=self.forbid_migration_agent,
            smt_allowed=self.smt_allowed,
            vmpl=self.vmpl,
            min_report_version=self.minimum_report_version,
            min_guest_svn=self.minimum_guest_svn,
        )


_TCB_KEYS = ("bootloader", "tee", "snp", "microcode", "fmc")


def _minimum_tcb(t: Table | None) -> MinimumTcb:
    if t is None:
        return MinimumTcb()
    parts = {name: t.opt_integer(name, minimum=0, maximum=0xFF) for name in _TCB_KEYS}
    return MinimumTcb(
        bootloader=parts["bootloader"] or 0,
        tee=parts["tee"] or 0,
        snp=parts["snp"] or 0,
        microcode=parts["microcode"] or 0,
        fmc=parts["fmc"],
    )


def _optional_hex(t: Table, key: str, size: int) -> bytes | None:
    text = t.opt_string(key)
    return None if text is None else parse_hex(t.key_path(key), text, size)


def _reference_values(t: Table, accept: AcceptMode) -> tuple[ReferenceValue, ...]:
    if accept is AcceptMode.REGISTERED:
        if t.has("reference_values"):
            raise t.error("reference_values", 'not allowed with accept = "registered"')
        return ()
    rows = t.tables("reference_values", ("measurement", "host_data", "label"), required=False)
    if not rows:
        raise t.error("reference_values", 'accept = "listed" needs at least one entry')
    values: list[ReferenceValue] = []
    seen: set[tuple[bytes, bytes | None]] = set()
    for row in rows:
        measurement = parse_hex(
            row.key_path("measurement"), row.string("measurement"), MEASUREMENT_SIZE
        )
        host_data = _optional_hex(row, "host_data", HOST_DATA_SIZE)
        label = parse_label(row.key_path("label"), row.string("label"))
        if (measurement, host_data) in seen:
            raise PolicyParseError(row.path, "duplicate reference value")
        seen.add((measurement, host_data))
        values.append(ReferenceValue(measurement=measurement, label=label, host_data=host_data))
    return tuple(values)
