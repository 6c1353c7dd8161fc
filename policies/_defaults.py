"""The shipped default documents and a schema-dispatching parser."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from typing import Any, Literal, overload

from policies._appraisal import AppraisalPolicy
from policies._egress import EgressPolicy
from policies._errors import PolicyError, PolicyParseError
from policies._key_release import KeyReleasePolicy
from policies._launch import LaunchConfiguration
from policies._reader import load_toml, toml_type_name

__all__ = ["DOCUMENT_TYPES", "AnyDocument", "default_text", "load_default", "parse_document"]

AnyDocument = AppraisalPolicy | KeyReleasePolicy | EgressPolicy | LaunchConfiguration
DefaultName = Literal["appraisal", "key_release", "egress", "launch_config"]

DOCUMENT_TYPES: Mapping[str, type[AnyDocument]] = {
    cls.KIND: cls for cls in (AppraisalPolicy, KeyReleasePolicy, EgressPolicy, LaunchConfiguration)
}
"""Document kind (``appraisal``, ``key_release``, ``egress``, ``launch_config``) → model."""


def _kind(name: str) -> str:
    kind = name.replace("-", "_")
    if kind not in DOCUMENT_TYPES:
        raise PolicyError(f"no default {name!r}; expected one of {', '.join(DOCUMENT_TYPES)}")
    return kind


def default_text(name: str) -> str:
    """The TOML text of a shipped default (``appraisal``, ``key_release``, ...)."""
    resource = importlib.resources.files("policies.defaults").joinpath(f"{_kind(name)}.toml")
    return resource.read_text(encoding="utf-8")


@overload
def load_default(name: Literal["appraisal"]) -> AppraisalPolicy: ...
@overload
def load_default(name: Literal["key_release"]) -> KeyReleasePolicy: ...
@overload
def load_default(name: Literal["egress"]) -> EgressPolicy: ...
@overload
def load_default(name: Literal["launch_config"]) -> LaunchConfiguration: ...
@overload
def load_default(name: str) -> AnyDocument: ...
def load_default(name: str) -> AnyDocument:
    """Parse a shipped default document.

    The default launch configuration is a template (``is_template``): fill its bundle
    digest with ``with_bundle_digest`` before taking its digest.
    """
    return DOCUMENT_TYPES[_kind(name)].from_toml(default_text(name))


def parse_document(text: str | bytes) -> AnyDocument:
    """Parse any of the four documents, choosing the model by its ``schema`` key."""
    data: Mapping[str, Any] = load_toml(text, "document")
    schema = data.get("schema")
    if not isinstance(schema, str):
        detail = (
            "missing required key"
            if schema is None
            else (f"expected string, got {toml_type_name(schema)}")
        )
        raise PolicyParseError("document.schema", detail)
    for cls in DOCUMENT_TYPES.values():
        if schema == cls.SCHEMA:
            return cls.from_dict(data)
    known = ", ".join(cls.SCHEMA for cls in DOCUMENT_TYPES.values())
    raise PolicyParseError("document.schema", f"unknown schema {schema!r}; expected one of {known}")
