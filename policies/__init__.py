"""PMC2 policies: the appraisal, key-release and egress policies and the launch configuration.

Each document is TOML, parsed strictly into a frozen dataclass (``from_toml``,
``from_file``, ``from_dict``), identified by the digest of its canonical encoding
(``digest()``; defined in ``policies._canon``) and written back in canonical form
(``to_toml()``). The launch configuration's digest is the enclave's 32-byte HOST_DATA.
Shipped defaults: ``load_default("appraisal" | "key_release" | "egress" | "launch_config")``.
"""

from policies._appraisal import AcceptMode, AppraisalPolicy, MinimumTcb, ReferenceValue
from policies._canon import canonical_json
from policies._defaults import (
    DOCUMENT_TYPES,
    AnyDocument,
    default_text,
    load_default,
    parse_document,
)
from policies._document import Document
from policies._egress import EgressPolicy
from policies._endpoint import Endpoint
from policies._errors import PolicyError, PolicyParseError
from policies._key_release import KeyReleasePolicy, ReleaseDecision, ReleaseRule
from policies._launch import LaunchConfiguration, Peers, parse_bundle_digest

__all__ = [
    "DOCUMENT_TYPES",
    "AcceptMode",
    "AnyDocument",
    "AppraisalPolicy",
    "Document",
    "EgressPolicy",
    "Endpoint",
    "KeyReleasePolicy",
    "LaunchConfiguration",
    "MinimumTcb",
    "Peers",
    "PolicyError",
    "PolicyParseError",
    "ReferenceValue",
    "ReleaseDecision",
    "ReleaseRule",
    "canonical_json",
    "default_text",
    "load_default",
    "parse_bundle_digest",
    "parse_document",
]
