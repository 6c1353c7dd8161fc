"""The egress policy: what may leave the enclave (enforced by the enclave's egress guard).

Document (``schema = "pmc2/egress/v1"``)::

    schema = "pmc2/egress/v1"
    codec = "pmc2-fp-128-192/v2"   # the only codec whose bit-strings may leave
    max_bytes_per_image = 128       # 1 .. 1048576: longest bit-string for one image
    max_images_per_second = 2000    # 1 .. 1000000: rate limit across all destinations
    destinations = [                # allow-list; empty: nothing may leave
      "https://cloud.example:8443/v1/infer",
      "10.0.0.7:9000",
    ]

Codec identifiers are ``name/vN``: a lowercase name of letters, digits and ``. _ + -``,
then ``/v`` and a version number; they are compared exactly. Destinations are URLs or
``host:port`` pairs, parsed and matched as defined in ``policies._endpoint``: scheme, host
and port exact, URL paths by segment prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from policies._canon import JsonValue
from policies._document import Document
from policies._endpoint import Endpoint
from policies._errors import PolicyError, PolicyParseError

__all__ = ["EgressPolicy"]

CODEC_ID = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}/v[1-9][0-9]{0,5}")
MAX_BYTES_RANGE = (1, 1 << 20)
RATE_RANGE = (1, 1_000_000)


@dataclass(frozen=True, slots=True)
class EgressPolicy(Document):
    """A parsed egress policy (see the module docstring)."""

    KIND: ClassVar[str] = "egress"
    SCHEMA: ClassVar[str] = "pmc2/egress/v1"

    codec: str
    max_bytes_per_image: int
    max_images_per_second: int
    destinations: tuple[Endpoint, ...] = ()

    def __post_init__(self) -> None:
        if not CODEC_ID.fullmatch(self.codec):
            raise PolicyError(f"bad codec identifier {self.codec!r}")
        if not MAX_BYTES_RANGE[0] <= self.max_bytes_per_image <= MAX_BYTES_RANGE[1]:
            raise PolicyError(f"max_bytes_per_image outside {MAX_BYTES_RANGE}")
        if not RATE_RANGE[0] <= self.max_images_per_second <= RATE_RANGE[1]:
            raise PolicyError(f"max_images_per_second outside {RATE_RANGE}")
        if len(set(self.destinations)) != len(self.destinations):
            raise PolicyError("duplicate destinations")

    @classmethod
    def _from_table(cls, data: Mapping[str, Any]) -> Self:
        t = cls._open(
            data,
            cls.KIND,
            ("codec", "max_bytes_per_image", "max_images_per_second", "destinations"),
        )
        codec = t.string("codec")
        if not CODEC_ID.fullmatch(codec):
            raise t.error("codec", f"bad codec identifier {codec!r}: expected {CODEC_ID.pattern}")
        max_bytes = t.integer(
            "max_bytes_per_image", minimum=MAX_BYTES_RANGE[0], maximum=MAX_BYTES_RANGE[1]
        )
        rate = t.integer("max_images_per_second", minimum=RATE_RANGE[0], maximum=RATE_RANGE[1])
        destinations: list[Endpoint] = []
        for where, text in t.strings("destinations") or []:
            try:
                endpoint = Endpoint.parse(text)
            except PolicyError as exc:
                raise PolicyParseError(where, str(exc)) from None
            if endpoint in destinations:
                raise PolicyParseError(where, f"duplicate destination {str(endpoint)!r}")
            destinations.append(endpoint)
        return cls(
            codec=codec,
            max_bytes_per_image=max_bytes,
            max_images_per_second=rate,
            destinations=tuple(destinations),
        )

    def to_dict(self) -> dict[str, JsonValue]:
        """The canonical value (see ``policies._canon``)."""
        return {
            "schema": self.SCHEMA,
            "codec": self.codec,
            "max_bytes_per_image": self.max_bytes_per_image,
            "max_images_per_second": self.max_images_per_second,
            "destinations": [str(d) for d in self.destinations],
        }

    def destination_allowed(self, destination: Endpoint | str) -> bool:
        """Whether some allow-list entry matches ``destination`` (unparsable: no)."""
        return any(entry.matches(destination) for entry in self.destinations)

    def violations(self, *, codec: str, size: int, destination: Endpoint | str) -> list[str]:
        """Why one bit-string of ``size`` bytes may not be sent (empty list: it may).

        The rate limit is stateful and left to the egress guard.
        """
        out: list[str] = []
        if codec != self.codec:
            out.append(f"codec {codec!r} is not the allowed {self.codec!r}")
        if not 0 < size <= self.max_bytes_per_image:
            out.append(f"{size} bytes outside 1 .. {self.max_bytes_per_image}")
        if not self.destination_allowed(destination):
            out.append(f"destination {str(destination)!r} is not allow-listed")
        return out
