"""The key-release policy: which attested enclaves may receive which resource.

Document (``schema = "pmc2/key-release/v1"``)::

    schema = "pmc2/key-release/v1"

    [[rules]]
    resource = "model-bundle-key"       # [A-Za-z0-9][A-Za-z0-9._-]{0,127}
    measurements = ["<48 bytes hex>"]   # optional: report MEASUREMENT is one of these
    host_data = ["<32 bytes hex>"]      # optional: report HOST_DATA is one of these
                                        #   (for PMC2 enclaves, launch-configuration digests)

    [[rules]]
    resource = "cloud-credential"
    any_attested = true                 # any enclave that passed appraisal

Decision (``KeyReleasePolicy.decide``), for an enclave that already passed appraisal:

1. Only rules whose ``resource`` equals the requested name apply; with none: deny.
2. A rule matches when every condition it gives matches (``measurements``: the report's
   MEASUREMENT is in the list; ``host_data``: the report's HOST_DATA is in the list);
   ``any_attested = true`` is a rule with no conditions, and must stand alone.
3. Release when at least one applicable rule matches; otherwise deny (default deny).

A rule must give at least one condition or ``any_attested = true``; condition lists must
be non-empty and free of duplicates. The HOST_DATA of a PMC2 enclave is the digest of its
launch configuration (``LaunchConfiguration.host_data()``), so ``host_data`` is also how a
rule names allowed launch configurations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from policies._canon import JsonValue
from policies._document import Document
from policies._errors import PolicyError, PolicyParseError
from policies._reader import Table, parse_hex

__all__ = ["KeyReleasePolicy", "ReleaseDecision", "ReleaseRule"]

MEASUREMENT_SIZE = 48
HOST_DATA_SIZE = 32
RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class ReleaseRule:
    """One rule: ``resource`` goes to enclaves meeting all given conditions."""

    resource: str
    measurements: tuple[bytes, ...] | None = None
    host_data: tuple[bytes, ...] | None = None
    any_attested: bool = False

    def __post_init__(self) -> None:
        if not RESOURCE_NAME.fullmatch(self.resource):
            raise PolicyError(f"bad resource name {self.resource!r}")
        conditions = [c for c in (self.measurements, self.host_data) if c is not None]
        if self.any_attested and conditions:
            raise PolicyError("any_attested = true takes no other condition")
        if not self.any_attested and not conditions:
            raise PolicyError("a rule needs a condition or any_attested = true")
        for name, values, size in (
            ("measurements", self.measurements, MEASUREMENT_SIZE),
            ("host_data", self.host_data, HOST_DATA_SIZE),
        ):
            if values is None:
                continue
            if not values:
                raise PolicyError(f"{name}: empty list")
            if len(set(values)) != len(values):
                raise PolicyError(f"{name}: duplicate values")
            if any(len(v) != size for v in values):
                raise PolicyError(f"{name}: values must be {size} bytes")

    def matches(self, *, measurement: bytes, host_data: bytes) -> bool:
        """Whether an attested enclave's MEASUREMENT and HOST_DATA meet every condition."""
        if self.measurements is not None and measurement not in self.measurements:
            return False
        return self.host_data is None or host_data in self.host_data

    def to_dict(self) -> dict[str, JsonValue]:
        """The canonical value."""
        out: dict[str, JsonValue] = {"resource": self.resource, "any_attested": self.any_attested}
        if self.measurements is not None:
            out["measurements"] = [m.hex() for m in self.measurements]
        if self.host_data is not None:
            out["host_data"] = [h.hex() for h in self.host_data]
        return out


@dataclass(frozen=True, slots=True)
class ReleaseDecision:
    """The outcome of a release request, with the reason for the audit log."""

    allowed: bool
    resource: str
    reason: str
    rule: int | None = None
    """Index of the matching rule in ``KeyReleasePolicy.rules`` when allowed."""


@dataclass(frozen=True, slots=True)
class KeyReleasePolicy(Document):
    """A parsed key-release policy (see the module docstring)."""

    KIND: ClassVar[str] = "key_release"
    SCHEMA: ClassVar[str] = "pmc2/key-release/v1"

    rules: tuple[ReleaseRule, ...] = ()

    @classmethod
    def _from_table(cls, data: Mapping[str, Any]) -> Self:
        t = cls._open(data, cls.KIND, ("rules",))
        rows = t.tables(
            "rules", ("resource", "measurements", "host_data", "any_attested"), required=False
        )
        return cls(rules=tuple(_rule(row) for row in rows))

    def to_dict(self) -> dict[str, JsonValue]:
        """The canonical value (see ``policies._canon``)."""
        return {"schema": self.SCHEMA, "rules": [rule.to_dict() for rule in self.rules]}

    def resources(self) -> tuple[str, ...]:
        """The resource names some rule mentions, in first-mention order."""
        return tuple(dict.fromkeys(rule.resource for rule in self.rules))

    def decide(self, resource: str, *, measurement: bytes, host_data: bytes) -> ReleaseDecision:
        """Apply the decision procedure of the module docstring."""
        applicable = [(i, r) for i, r in enumerate(self.rules) if r.resource == resource]
        if not applicable:
            return ReleaseDecision(False, resource, "no rule for this resource")
        for index, rule in applicable:
            if rule.matches(measurement=measurement, host_data=host_data):
                how = "any attested enclave" if rule.any_attested else "conditions met"
                return ReleaseDecision(True, resource, f"rule {index} ({how})", index)
        return ReleaseDecision(
            False,
            resource,
            f"no rule for this resource matches measurement {measurement.hex()} "
            f"and host_data {host_data.hex()}",
        )

    def allows(self, resource: str, *, measurement: bytes, host_data: bytes) -> bool:
        """Whether ``decide`` releases ``resource``."""
        return self.decide(resource, measurement=measurement, host_data=host_data).allowed


def _hex_list(t: Table, key: str, size: int) -> tuple[bytes, ...] | None:
    items = t.strings(key, required=False)
    if items is None:
        return None
    if not items:
        raise t.error(key, "empty list (leave the key out instead)")
    values: list[bytes] = []
    for where, text in items:
        value = parse_hex(where, text, size)
        if value in values:
            raise PolicyParseError(where, "duplicate value")
        values.append(value)
    return tuple(values)


def _rule(t: Table) -> ReleaseRule:
    resource = t.string("resource")
    if not RESOURCE_NAME.fullmatch(resource):
        raise t.error(
            "resource", f"bad resource name {resource!r}: expected {RESOURCE_NAME.pattern}"
        )
    measurements = _hex_list(t, "measurements", MEASUREMENT_SIZE)
    host_data = _hex_list(t, "host_data", HOST_DATA_SIZE)
    any_attested = t.boolean("any_attested", default=False)
    if any_attested and (measurements is not None or host_data is not None):
        raise t.error("any_attested", "any_attested = true takes no other condition")
    if not any_attested and measurements is None and host_data is None:
        raise PolicyParseError(
            t.path, "a rule needs measurements, host_data, or any_attested = true"
        )
    return ReleaseRule(resource, measurements, host_data, any_attested)
