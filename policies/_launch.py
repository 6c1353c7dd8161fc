"""The enclave's launch configuration, whose digest is its SEV-SNP HOST_DATA.

In the manner of Confidential Containers' init-data, the host launches the enclave VM
with HOST_DATA set to the digest of a configuration document and hands the document to
the guest; the guest checks that the document hashes to the HOST_DATA in its own reports
before using it, and the attestation service (and any client) can tell from HOST_DATA
which configuration the enclave runs with. HOST_DATA is 32 bytes, so the digest is
SHA-256 of the canonical encoding (``policies._canon``), in full, untruncated.

Document (``schema = "pmc2/launch-config/v1"``)::

    schema = "pmc2/launch-config/v1"
    egress_policy_digest = "<48 bytes hex>"   # EgressPolicy.digest() the enclave enforces
    model_bundle_digest = "sha256:<hex>"      # digest of the model-bundle manifest
                                              #   (sha256, sha384 or sha512, then hex)

    [peers]
    attestation_service = "https://attest.example:8443"   # URLs (policies._endpoint)
    cloud_inference = "https://cloud.example:9443/v1/infer"

Template: the shipped default leaves ``model_bundle_digest`` out, because the bundle is
only known once it is built. Such a document parses as a *template*
(``is_template``); it has no digest (``digest()`` raises ``PolicyError``) until the
enclave host fills the bundle digest at startup with ``with_bundle_digest(...)``, which
gives a complete configuration. ``to_toml()`` of a template leaves the key out again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self

from policies._canon import JsonValue
from policies._document import Document
from policies._endpoint import Endpoint
from policies._errors import PolicyError, PolicyParseError
from policies._reader import Table, parse_hex

if TYPE_CHECKING:
    from policies._egress import EgressPolicy

__all__ = ["LaunchConfiguration", "Peers", "parse_bundle_digest"]

POLICY_DIGEST_SIZE = 48
HOST_DATA_SIZE = 32
BUNDLE_DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
_BUNDLE_DIGEST = re.compile(r"(?P<alg>[a-z0-9]+):(?P<hex>[0-9A-Fa-f]+)")


def parse_bundle_digest(text: str) -> str:
    """Validate ``alg:hex`` (sha256, sha384 or sha512) and return it with lowercase hex."""
    match = _BUNDLE_DIGEST.fullmatch(text)
    if match is None or match["alg"] not in BUNDLE_DIGEST_SIZES:
        raise PolicyError(f"bad bundle digest {text!r}: expected sha256:, sha384: or sha512: hex")
    size = BUNDLE_DIGEST_SIZES[match["alg"]]
    if len(match["hex"]) != 2 * size:
        raise PolicyError(f"bad bundle digest {text!r}: {match['alg']} has {size} bytes")
    return f"{match['alg']}:{match['hex'].lower()}"


@dataclass(frozen=True, slots=True)
class Peers:
    """The services the enclave talks to (both URLs)."""

    attestation_service: Endpoint
    cloud_inference: Endpoint

    def __post_init__(self) -> None:
        if not (self.attestation_service.is_url and self.cloud_inference.is_url):
            raise PolicyError("peers must be URLs")

    def to_dict(self) -> dict[str, JsonValue]:
        """The canonical value."""
        return {
            "attestation_service": str(self.attestation_service),
            "cloud_inference": str(self.cloud_inference),
        }


@dataclass(frozen=True, slots=True)
class LaunchConfiguration(Document):
    """A parsed launch configuration or template (see the module docstring)."""

    KIND: ClassVar[str] = "launch_config"
    SCHEMA: ClassVar[str] = "pmc2/launch-config/v1"
    DIGEST_ALGORITHM: ClassVar[str] = "sha256"

    egress_policy_digest: bytes
    peers: Peers
    model_bundle_digest: str | None = None

    def __post_init__(self) -> None:
        if len(self.egress_policy_digest) != POLICY_DIGEST_SIZE:
            raise PolicyError(f"egress_policy_digest must be {POLICY_DIGEST_SIZE} bytes")
        if (
            self.model_bundle_digest is not None
            and parse_bundle_digest(self.model_bundle_digest) != self.model_bundle_digest
        ):
            raise PolicyError("model_bundle_digest is not in canonical form (lowercase hex)")

    @classmethod
    def _from_table(cls, data: Mapping[str, Any]) -> Self:
        t = cls._open(data, cls.KIND, ("egress_policy_digest", "model_bundle_digest", "peers"))
        egress = parse_hex(
            t.key_path("egress_policy_digest"), t.string("egress_policy_digest"), POLICY_DIGEST_SIZE
        )
        bundle_text = t.opt_string("model_bundle_digest")
        bundle = None
        if bundle_text is not None:
            try:
                bundle = parse_bundle_digest(bundle_text)
            except PolicyError as exc:
                raise t.error("model_bundle_digest", str(exc)) from None
        peers = t.table("peers", ("attestation_service", "cloud_inference"))
        assert peers is not None
        return cls(
            egress_policy_digest=egress,
            peers=Peers(
                attestation_service=_url(peers, "attestation_service"),
                cloud_inference=_url(peers, "cloud_inference"),
            ),
            model_bundle_digest=bundle,
        )

    def to_dict(self) -> dict[str, JsonValue]:
        """The canonical value (see ``policies._canon``)."""
        out: dict[str, JsonValue] = {
            "schema": self.SCHEMA,
            "egress_policy_digest": self.egress_policy_digest.hex(),
        }
        if self.model_bundle_digest is not None:
            out["model_bundle_digest"] = self.model_bundle_digest
        out["peers"] = self.peers.to_dict()
        return out

    @property
    def is_template(self) -> bool:
        """Whether the model-bundle digest is still to be filled."""
        return self.model_bundle_digest is None

    def with_bundle_digest(self, digest: str) -> LaunchConfiguration:
        """The complete configuration with ``model_bundle_digest`` set (``alg:hex``).

        Filling a complete configuration is allowed only with the same digest.
        """
        value = parse_bundle_digest(digest)
        if self.model_bundle_digest is not None and self.model_bundle_digest != value:
            raise PolicyError(
                f"launch configuration already has bundle digest {self.model_bundle_digest}"
            )
        return replace(self, model_bundle_digest=value)

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding: the HOST_DATA (refused for a template)."""
        if self.is_template:
            raise PolicyError(
                "a launch-configuration template has no digest: fill it with with_bundle_digest()"
            )
        return Document.digest(self)

    def host_data(self) -> bytes:
        """The 32-byte SEV-SNP HOST_DATA for this configuration (same as ``digest()``)."""
        value = self.digest()
        assert len(value) == HOST_DATA_SIZE
        return value

    def check_egress(self, egress: EgressPolicy) -> list[str]:
        """Why ``egress`` is not the policy this configuration names (empty: it is)."""
        out: list[str] = []
        if egress.digest() != self.egress_policy_digest:
            out.append(
                f"egress policy digest {egress.digest_hex()} is not the configured "
                f"{self.egress_policy_digest.hex()}"
            )
        if not egress.destination_allowed(self.peers.cloud_inference):
            out.append(
                f"the egress policy does not allow the cloud inference peer "
                f"{self.peers.cloud_inference}"
            )
        return out


def _url(t: Table, key: str) -> Endpoint:
    try:
        endpoint = Endpoint.parse(t.string(key))
    except PolicyError as exc:
        raise PolicyParseError(t.key_path(key), str(exc)) from None
    if not endpoint.is_url:
        raise t.error(key, "expected a URL (http:// or https://)")
    return endpoint
