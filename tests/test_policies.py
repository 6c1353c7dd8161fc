"""Policies: strict parsing, canonical digests, defaults, matching, HOST_DATA."""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import (
    DOCUMENT_TYPES,
    AcceptMode,
    AnyDocument,
    AppraisalPolicy,
    EgressPolicy,
    Endpoint,
    KeyReleasePolicy,
    LaunchConfiguration,
    MinimumTcb,
    Peers,
    PolicyError,
    PolicyParseError,
    ReferenceValue,
    ReleaseRule,
    canonical_json,
    default_text,
    load_default,
    parse_document,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
M1 = bytes(range(48))
M2 = bytes(range(1, 49))
H1 = bytes(range(32))
H2 = bytes(range(2, 34))
BUNDLE = "sha256:" + "ab" * 32


def _egress_text(**overrides: str) -> str:
    fields = {
        "schema": '"pmc2/egress/v1"',
        "codec": '"pmc2-fp-128-192/v2"',
        "max_bytes_per_image": "64",
        "max_images_per_second": "100",
        "destinations": '["https://cloud.example:8443/v1/infer"]',
    }
    fields.update(overrides)
    return "\n".join(f"{k} = {v}" for k, v in fields.items() if v != "") + "\n"


def _parse_error(cls: type[AnyDocument], text: str) -> PolicyParseError:
    with pytest.raises(PolicyParseError) as info:
        cls.from_toml(text)
    return info.value


# ----------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("name", ["appraisal", "key_release", "egress", "launch_config"])
def test_defaults_parse_and_are_canonical_round_trips(name: str) -> None:
    document = load_default(name)
    assert type(document) is DOCUMENT_TYPES[name]
    assert type(document).from_toml(document.to_toml()) == document
    assert parse_document(default_text(name)) == document
    assert load_default(name.replace("_", "-")) == document


def test_default_contents() -> None:
    appraisal = load_default("appraisal")
    assert appraisal.accept is AcceptMode.REGISTERED
    assert appraisal.forbid_debug and appraisal.forbid_migration_agent
    assert appraisal.vmpl == 0
    assert len(appraisal.digest()) == 48
    release = load_default("key_release")
    assert release.resources() == ("model-bundle-key", "cloud-credential")
    egress = load_default("egress")
    assert egress.codec == "pmc2-fp-128-192/v2"
    launch = load_default("launch_config")
    assert launch.is_template
    # The default launch configuration names the default egress policy, whose
    # destinations allow the configured cloud-inference peer.
    assert launch.check_egress(egress) == []
    with pytest.raises(PolicyError, match="template"):
        launch.digest()


def test_unknown_default_rejected() -> None:
    with pytest.raises(PolicyError, match="no default"):
        load_default("nonsense")


# ---------------------------------------------------------------------- strict parsing


@pytest.mark.parametrize(
    ("cls", "text", "key_path"),
    [
        (EgressPolicy, _egress_text(colour='"blue"'), "egress.colour"),
        (
            AppraisalPolicy,
            'schema = "pmc2/appraisal/v1"\naccept = "registered"\n'
            "[minimum_tcb]\nsnp = 1\nfoo = 2\n",
            "appraisal.minimum_tcb.foo",
        ),
        (
            KeyReleasePolicy,
            'schema = "pmc2/key-release/v1"\n[[rules]]\nresource = "a"\nany_attested = true\n'
            '[[rules]]\nresource = "b"\nany_attested = true\nbogus = 1\n',
            "key_release.rules[1].bogus",
        ),
        (
            LaunchConfiguration,
            f'schema = "pmc2/launch-config/v1"\negress_policy_digest = "{"00" * 48}"\n'
            '[peers]\nattestation_service = "https://a.example"\n'
            'cloud_inference = "https://c.example"\n"odd key" = 1\n',
            "launch_config.peers.'odd key'",
        ),
    ],
)
def test_unknown_key_rejected_with_its_path(
    cls: type[AnyDocument], text: str, key_path: str
) -> None:
    error = _parse_error(cls, text)
    assert error.key_path == key_path
    assert str(error) == f"{key_path}: unknown key"


@pytest.mark.parametrize(
    ("cls", "text", "message"),
    [
        (
            EgressPolicy,
            _egress_text(max_bytes_per_image='"64"'),
            "egress.max_bytes_per_image: expected integer, got string",
        ),
        (
            EgressPolicy,
            _egress_text(max_images_per_second="true"),
            "egress.max_images_per_second: expected integer, got boolean",
        ),
        (
            EgressPolicy,
            _egress_text(max_bytes_per_image="64.0"),
            "egress.max_bytes_per_image: expected integer, got float",
        ),
        (
            EgressPolicy,
            _egress_text(destinations='["https://a.example", 5]'),
            "egress.destinations[1]: expected string, got integer",
        ),
        (
            EgressPolicy,
            _egress_text(destinations='"https://a.example"'),
            "egress.destinations: expected array, got string",
        ),
        (
            AppraisalPolicy,
            'schema = "pmc2/appraisal/v1"\naccept = "registered"\nforbid_debug = 1\n',
            "appraisal.forbid_debug: expected boolean, got integer",
        ),
        (
            AppraisalPolicy,
            'schema = "pmc2/appraisal/v1"\naccept = "registered"\nminimum_tcb = 3\n',
            "appraisal.minimum_tcb: expected table, got integer",
        ),
        (
            AppraisalPolicy,
            'schema = "pmc2/appraisal/v1"\naccept = "listed"\n'
            f'[[reference_values]]\nmeasurement = "{"aa" * 48}"\nlabel = 7\n',
            "appraisal.reference_values[0].label: expected string, got integer",
        ),
        (
            KeyReleasePolicy,
            'schema = "pmc2/key-release/v1"\nrules = 2024-01-01\n',
            "key_release.rules: expected array of tables, got date",
        ),
        (
            KeyReleasePolicy,
            'schema = "pmc2/key-release/v1"\nrules = ["x"]\n',
            "key_release.rules[0]: expected table, got string",
        ),
    ],
)
def test_wrong_type_rejected_with_its_path(cls: type[AnyDocument], text: str, message: str) -> None:
    error = _parse_error(cls, text)
    assert str(error) == message
    assert error.key_path == message.split(": ", 1)[0]


@pytest.mark.parametrize(
    ("text", "key_path", "detail"),
    [
        (_egress_text(codec=""), "egress.codec", "missing required key"),
        (_egress_text(schema=""), "egress.schema", "missing required key"),
        (_egress_text(schema='"pmc2/egress/v2"'), "egress.schema", "expected 'pmc2/egress/v1'"),
        (_egress_text(codec='"PMC2"'), "egress.codec", "bad codec identifier"),
        (_egress_text(max_bytes_per_image="0"), "egress.max_bytes_per_image", "outside"),
        (
            _egress_text(destinations='["https://u@a.example"]'),
            "egress.destinations[0]",
            "user-info",
        ),
        (
            _egress_text(destinations='["https://a.example", "https://A.example:443/"]'),
            "egress.destinations[1]",
            "duplicate destination",
        ),
        ("codec = [1, 2\n", "egress", "invalid TOML"),
    ],
)
def test_invalid_values_rejected_with_their_path(text: str, key_path: str, detail: str) -> None:
    error = _parse_error(EgressPolicy, text)
    assert error.key_path == key_path
    assert detail in error.detail


def test_appraisal_specific_rules() -> None:
    head = 'schema = "pmc2/appraisal/v1"\n'
    error = _parse_error(AppraisalPolicy, head + 'accept = "some"\n')
    assert error.key_path == "appraisal.accept"
    error = _parse_error(AppraisalPolicy, head + 'accept = "listed"\n')
    assert error.key_path == "appraisal.reference_values"
    row = f'[[reference_values]]\nmeasurement = "{"aa" * 48}"\nlabel = "x"\n'
    error = _parse_error(AppraisalPolicy, head + 'accept = "registered"\n' + row)
    assert error.key_path == "appraisal.reference_values"
    error = _parse_error(AppraisalPolicy, head + 'accept = "listed"\n' + row + row)
    assert error.key_path == "appraisal.reference_values[1]"
    error = _parse_error(
        AppraisalPolicy,
        head
        + f'accept = "listed"\n[[reference_values]]\nmeasurement = "{"aa" * 47}"\nlabel = "x"\n',
    )
    assert error.key_path == "appraisal.reference_values[0].measurement"
    error = _parse_error(AppraisalPolicy, head + 'accept = "registered"\nvmpl = 4\n')
    assert error.key_path == "appraisal.vmpl"
    error = _parse_error(
        AppraisalPolicy, head + 'accept = "registered"\n[minimum_tcb]\nfmc = 256\n'
    )
    assert error.key_path == "appraisal.minimum_tcb.fmc"
    error = _parse_error(
        AppraisalPolicy, head + 'accept = "registered"\ntoken_lifetime_seconds = 5\n'
    )
    assert error.key_path == "appraisal.token_lifetime_seconds"


def test_key_release_specific_rules() -> None:
    head = 'schema = "pmc2/key-release/v1"\n[[rules]]\n'
    error = _parse_error(KeyReleasePolicy, head + 'resource = "a/b"\nany_attested = true\n')
    assert error.key_path == "key_release.rules[0].resource"
    error = _parse_error(KeyReleasePolicy, head + 'resource = "a"\n')
    assert error.key_path == "key_release.rules[0]"
    error = _parse_error(KeyReleasePolicy, head + 'resource = "a"\nmeasurements = []\n')
    assert error.key_path == "key_release.rules[0].measurements"
    m = '"' + "aa" * 48 + '"'
    error = _parse_error(
        KeyReleasePolicy, head + f'resource = "a"\nmeasurements = [{m}, {m.upper()}]\n'
    )
    assert error.key_path == "key_release.rules[0].measurements[1]"
    error = _parse_error(
        KeyReleasePolicy, head + f'resource = "a"\nmeasurements = [{m}]\nany_attested = true\n'
    )
    assert error.key_path == "key_release.rules[0].any_attested"
    error = _parse_error(KeyReleasePolicy, head + 'resource = "a"\nhost_data = ["00"]\n')
    assert error.key_path == "key_release.rules[0].host_data[0]"


def test_wrong_document_type_and_dispatch() -> None:
    error = _parse_error(AppraisalPolicy, default_text("egress"))
    assert error.key_path == "appraisal.schema"
    with pytest.raises(PolicyParseError, match="unknown schema"):
        parse_document('schema = "pmc2/other/v1"\n')
    with pytest.raises(PolicyParseError, match=r"document\.schema: missing"):
        parse_document("a = 1\n")


def test_from_dict_accepts_json_with_the_same_rules() -> None:
    data = json.loads(json.dumps(load_default("egress").to_dict()))
    assert EgressPolicy.from_dict(data) == load_default("egress")
    data["max_bytes_per_image"] = None
    with pytest.raises(PolicyParseError, match="expected integer, got null"):
        EgressPolicy.from_dict(data)


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "egress.toml"
    path.write_text(_egress_text(), encoding="utf-8")
    assert EgressPolicy.from_file(path).max_bytes_per_image == 64
    with pytest.raises(PolicyError, match="cannot read"):
        EgressPolicy.from_file(tmp_path / "missing.toml")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyParseError, match="not UTF-8"):
        EgressPolicy.from_file(path)


# -------------------------------------------------------------------- canonical encoding


def test_canonical_json_exact_bytes() -> None:
    value: dict[str, Any] = {
        "b": [1, True, False],
        "a": 'x\ny\u0001"\\é\u007f',
        "c": {"z": 0, "y": "€"},
    }
    assert (
        canonical_json(value)
        == ('{"a":"x\\ny\\u0001\\"\\\\é\u007f","b":[1,true,false],"c":{"y":"€","z":0}}').encode()
    )
    with pytest.raises(PolicyError):
        canonical_json({"a": 1.5})  # type: ignore[dict-item]
    with pytest.raises(PolicyError):
        canonical_json({"a": 2**53})


def test_digest_is_sha384_of_canonical_json() -> None:
    egress = load_default("egress")
    assert egress.digest() == hashlib.sha384(canonical_json(egress.to_dict())).digest()
    assert egress.canonical_json().startswith(b'{"codec":"pmc2-fp-128-192/v2",')


def test_digest_stable_across_formatting_by_hand() -> None:
    plain = _egress_text()
    shuffled = (
        "# a comment\n\n"
        'destinations = [\n  "HTTPS://Cloud.Example:8443/v1/infer/",  # trailing comment\n]\n'
        "max_images_per_second=100\n"
        "codec    =    'pmc2-fp-128-192/v2'\n"
        "max_bytes_per_image = 0x40\n"
        'schema = "pmc2/egress/v1"\n'
    )
    assert EgressPolicy.from_toml(plain).digest() == EgressPolicy.from_toml(shuffled).digest()
    explicit = default_text("appraisal")
    minimal = 'schema = "pmc2/appraisal/v1"\naccept = "registered"\nvmpl = 0\n'
    assert (
        AppraisalPolicy.from_toml(explicit).digest() == AppraisalPolicy.from_toml(minimal).digest()
    )


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("appraisal", lambda d: replace(d, forbid_debug=False)),
        ("appraisal", lambda d: replace(d, minimum_tcb=MinimumTcb(snp=1))),
        ("appraisal", lambda d: replace(d, token_lifetime_seconds=3601)),
        ("key_release", lambda d: replace(d, rules=d.rules[:1])),
        ("key_release", lambda d: replace(d, rules=(ReleaseRule("x", measurements=(M1,)),))),
        ("egress", lambda d: replace(d, max_bytes_per_image=d.max_bytes_per_image + 1)),
        ("egress", lambda d: replace(d, codec="pmc2-fp-128-192/v3")),
        ("egress", lambda d: replace(d, destinations=(Endpoint.parse("http://127.0.0.1:8403"),))),
    ],
)
def test_digest_changes_when_a_value_changes(name: str, change: Any) -> None:
    document = load_default(name)
    changed = change(document)
    assert changed != document
    assert changed.digest() != document.digest()


# ---------------------------------------------------------- hypothesis: documents at random

_names = st.sampled_from(["a.example", "cloud.example.org", "10.0.0.7", "[::1]", "localhost"])
_segments = st.lists(
    st.text(string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=6), max_size=3
)
_label = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20)


@st.composite
def _endpoints(draw: st.DrawFn, url: bool | None = None) -> Endpoint:
    is_url = draw(st.booleans()) if url is None else url
    host = draw(_names)
    port = draw(st.integers(1, 65535))
    if not is_url:
        return Endpoint(None, host, port)
    return Endpoint(draw(st.sampled_from(["http", "https"])), host, port, tuple(draw(_segments)))


def _hex_values(size: int, max_size: int = 3) -> st.SearchStrategy[tuple[bytes, ...]]:
    return st.lists(
        st.binary(min_size=size, max_size=size), min_size=1, max_size=max_size, unique=True
    ).map(tuple)


@st.composite
def _appraisals(draw: st.DrawFn) -> AppraisalPolicy:
    accept = draw(st.sampled_from(AcceptMode))
    values: tuple[ReferenceValue, ...] = ()
    if accept is AcceptMode.LISTED:
        measurements = draw(_hex_values(48))
        values = tuple(
            ReferenceValue(m, draw(_label), draw(st.none() | st.binary(min_size=32, max_size=32)))
            for m in measurements
        )
    byte = st.integers(0, 255)
    return AppraisalPolicy(
        accept=accept,
        reference_values=values,
        minimum_tcb=MinimumTcb(
            draw(byte), draw(byte), draw(byte), draw(byte), draw(st.none() | byte)
        ),
        forbid_debug=draw(st.booleans()),
        forbid_migration_agent=draw(st.booleans()),
        smt_allowed=draw(st.booleans()),
        vmpl=draw(st.none() | st.integers(0, 3)),
        minimum_report_version=draw(st.integers(0, 2**32 - 1)),
        minimum_guest_svn=draw(st.integers(0, 2**32 - 1)),
        family_id=draw(st.none() | st.binary(min_size=16, max_size=16)),
        image_id=draw(st.none() | st.binary(min_size=16, max_size=16)),
        token_lifetime_seconds=draw(st.integers(60, 86400)),
    )


@st.composite
def _rules(draw: st.DrawFn) -> ReleaseRule:
    resource = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True))
    if draw(st.booleans()):
        return ReleaseRule(resource, any_attested=True)
    measurements = draw(st.none() | _hex_values(48))
    host_data = draw(_hex_values(32) if measurements is None else st.none() | _hex_values(32))
    return ReleaseRule(resource, measurements, host_data)


@st.composite
def _egresses(draw: st.DrawFn) -> EgressPolicy:
    return EgressPolicy(
        codec=draw(st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,8}/v[1-9][0-9]{0,2}", fullmatch=True)),
        max_bytes_per_image=draw(st.integers(1, 1 << 20)),
        max_images_per_second=draw(st.integers(1, 1_000_000)),
        destinations=tuple(draw(st.lists(_endpoints(), max_size=4, unique=True))),
    )


@st.composite
def _launches(draw: st.DrawFn) -> LaunchConfiguration:
    bundle = draw(
        st.none()
        | st.sampled_from(["sha256", "sha384", "sha512"]).flatmap(
            lambda alg: st.binary(
                min_size={"sha256": 32, "sha384": 48, "sha512": 64}[alg],
                max_size={"sha256": 32, "sha384": 48, "sha512": 64}[alg],
            ).map(lambda b: f"{alg}:{b.hex()}")
        )
    )
    return LaunchConfiguration(
        egress_policy_digest=draw(st.binary(min_size=48, max_size=48)),
        peers=Peers(draw(_endpoints(url=True)), draw(_endpoints(url=True))),
        model_bundle_digest=bundle,
    )


_documents = st.one_of(
    _appraisals(),
    st.lists(_rules(), max_size=4).map(lambda rules: KeyReleasePolicy(rules=tuple(rules))),
    _egresses(),
    _launches(),
)

_HEX = re.compile(r"(?:[0-9a-f]{2}){16,}")


def _render_string(value: str, rng: random.Random) -> str:
    if _HEX.fullmatch(value) and rng.random() < 0.5:
        value = value.upper()
    if "'" not in value and "\n" not in value and rng.random() < 0.5:
        return f"'{value}'"
    return json.dumps(value, ensure_ascii=False)


def _render_value(value: Any, rng: random.Random) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return rng.choice([str(value), hex(value), f"{value:_}"]) if value > 0 else "0"
    if isinstance(value, str):
        return _render_string(value, rng)
    if isinstance(value, Mapping):
        items = list(value.items())
        rng.shuffle(items)
        return "{ " + ", ".join(f"{k} = {_render_value(v, rng)}" for k, v in items) + " }"
    rendered = [_render_value(v, rng) for v in value]
    sep = rng.choice([", ", ",\n  ", " ,  "])
    return "[" + sep.join(rendered) + (rng.choice([",", ""]) if rendered else "") + "]"


def _render(table: Mapping[str, Any], rng: random.Random, path: Sequence[str] = ()) -> list[str]:
    """Write ``table`` as TOML with shuffled keys, mixed table styles and comments."""
    inline: list[tuple[str, Any]] = []
    headed: list[tuple[str, Any]] = []
    for key, value in table.items():
        is_tables = isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
        if (isinstance(value, Mapping) or is_tables) and rng.random() < 0.6:
            headed.append((key, value))
        else:
            inline.append((key, value))
    rng.shuffle(inline)
    rng.shuffle(headed)
    lines: list[str] = []
    for key, value in inline:
        if rng.random() < 0.3:
            lines.append(f"# comment about {key}")
        spaces = " " * rng.randint(0, 3)
        lines.append(f"{key}{spaces}={spaces}{_render_value(value, rng)}")
    for key, value in headed:
        name = ".".join([*path, key])
        if isinstance(value, Mapping):
            lines += ["", f"[{name}]  # table", *_render(value, rng, [*path, key])]
        else:
            for item in value:
                lines += ["", f"[[{name}]]", *_render(item, rng, [*path, key])]
    return lines


@SETTINGS
@given(document=_documents)
def test_round_trip_to_toml_from_toml(document: AnyDocument) -> None:
    text = document.to_toml()
    again = type(document).from_toml(text)
    assert again == document
    assert again.to_toml() == text
    assert parse_document(text) == document


@SETTINGS
@given(document=_documents, seed=st.integers(0, 2**32 - 1))
def test_digest_stable_across_key_order_whitespace_comments(
    document: AnyDocument, seed: int
) -> None:
    text = "\n".join(_render(document.to_dict(), random.Random(seed))) + "\n"
    again = type(document).from_toml(text)
    assert again == document
    assert again.canonical_json() == document.canonical_json()
    if not (isinstance(document, LaunchConfiguration) and document.is_template):
        assert again.digest() == document.digest()


# ----------------------------------------------------------------------------- appraisal


def test_appraisal_reference_values() -> None:
    listed = AppraisalPolicy(
        accept=AcceptMode.LISTED,
        reference_values=(ReferenceValue(M1, "pinned", H1), ReferenceValue(M2, "any host data")),
    )
    registered = (ReferenceValue(M2, "registered"),)
    assert listed.accepted_reference_values(registered) == listed.reference_values
    assert listed.match_reference_value(M1, H1, registered) == listed.reference_values[0]
    assert listed.match_reference_value(M1, H2, registered) is None
    assert listed.match_reference_value(M2, H2, ()) == listed.reference_values[1]
    by_registry = load_default("appraisal")
    assert by_registry.match_reference_value(M2, H1, registered) == registered[0]
    assert by_registry.match_reference_value(M1, H1, registered) is None
    assert by_registry.match_reference_value(M2, H1, ()) is None
    with pytest.raises(PolicyError):
        AppraisalPolicy(accept=AcceptMode.LISTED)
    with pytest.raises(PolicyError):
        AppraisalPolicy(accept=AcceptMode.REGISTERED, reference_values=registered)


def _report(**fields: Any) -> Any:
    from attestation import AttestationReport
    from attestation._types import Product, TcbVersion

    tcb = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    base: dict[str, Any] = {
        "product": Product.MILAN,
        "version": 2,
        "current_tcb": tcb,
        "reported_tcb": tcb,
        "committed_tcb": tcb,
        "launch_tcb": tcb,
        "measurement": M1,
        "host_data": H1,
    }
    base.update(fields)
    return AttestationReport(**base)


def test_appraisal_options_from_policy() -> None:
    from attestation import GuestPolicy, appraise

    policy = load_default("appraisal")
    registered = (ReferenceValue(M1, "enclave", H1), ReferenceValue(M2, "other"))
    options = policy.appraisal_options(
        registered, measurement=M1, host_data=H1, report_data=bytes(range(64))
    )
    assert options.allowed_measurements == frozenset({M1})
    assert options.host_data == H1
    assert options.report_data == bytes(range(64))
    assert options.forbid_debug is True and options.vmpl == 0
    assert options.min_report_version == 2
    assert options.min_tcb is not None
    assert options.min_tcb.components() == {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0}
    good = _report(report_data=bytes(range(64)))
    assert appraise(good, options) == []

    debug = _report(report_data=bytes(range(64)), policy=GuestPolicy(debug=True))
    failures = appraise(debug, options)
    assert len(failures) == 1 and "DEBUG" in failures[0]

    # Registered measurement, but HOST_DATA other than the pinned one: fails on HOST_DATA.
    options = policy.appraisal_options(registered, measurement=M1, host_data=H2)
    assert options.allowed_measurements == frozenset({M1}) and options.host_data == H1
    failures = appraise(_report(host_data=H2), options)
    assert len(failures) == 1 and "HOST_DATA" in failures[0]

    # Unregistered measurement: fails on MEASUREMENT, also with nothing registered.
    unknown = bytes(48)
    options = policy.appraisal_options(registered, measurement=unknown, host_data=H1)
    assert options.allowed_measurements == frozenset({M1, M2})
    failures = appraise(_report(measurement=unknown), options)
    assert len(failures) == 1 and "MEASUREMENT" in failures[0]
    options = policy.appraisal_options((), measurement=M1, host_data=H1)
    assert options.allowed_measurements == frozenset()
    assert appraise(_report(), options) != []

    # A policy's minimum TCB and report version are carried over.
    strict = replace(policy, minimum_tcb=MinimumTcb(snp=9), minimum_report_version=3)
    options = strict.appraisal_options(registered, measurement=M1, host_data=H1)
    failures = appraise(_report(), options)
    assert any("snp 8 < minimum 9" in f for f in failures)
    assert any("VERSION 2 < minimum 3" in f for f in failures)


def test_appraisal_options_listed_ignores_registry() -> None:
    listed = AppraisalPolicy(
        accept=AcceptMode.LISTED, reference_values=(ReferenceValue(M2, "pinned"),)
    )
    options = listed.appraisal_options(
        (ReferenceValue(M1, "registered"),), measurement=M1, host_data=H1
    )
    assert options.allowed_measurements == frozenset({M2})
    options = listed.appraisal_options((), measurement=M2, host_data=H1)
    assert options.allowed_measurements == frozenset({M2}) and options.host_data is None


# --------------------------------------------------------------------------- key release


def test_key_release_matching() -> None:
    policy = KeyReleasePolicy(
        rules=(
            ReleaseRule("model-bundle-key", measurements=(M1,), host_data=(H1,)),
            ReleaseRule("model-bundle-key", host_data=(H2,)),
            ReleaseRule("cloud-credential", measurements=(M1, M2)),
            ReleaseRule("open", any_attested=True),
        )
    )
    assert policy.allows("model-bundle-key", measurement=M1, host_data=H1)
    assert not policy.allows("model-bundle-key", measurement=M1, host_data=bytes(32))
    assert not policy.allows("model-bundle-key", measurement=M2, host_data=H1)
    decision = policy.decide("model-bundle-key", measurement=M2, host_data=H2)
    assert decision.allowed and decision.rule == 1
    assert policy.allows("cloud-credential", measurement=M2, host_data=bytes(32))
    assert not policy.allows("cloud-credential", measurement=bytes(48), host_data=H1)
    assert policy.allows("open", measurement=bytes(48), host_data=bytes(32))
    denied = policy.decide("unknown", measurement=M1, host_data=H1)
    assert not denied.allowed and denied.rule is None and "no rule" in denied.reason
    assert not KeyReleasePolicy().allows("open", measurement=M1, host_data=H1)


@SETTINGS
@given(
    rule=_rules(),
    measurement=st.binary(min_size=48, max_size=48),
    host=st.binary(min_size=32, max_size=32),
)
def test_key_release_rule_semantics(rule: ReleaseRule, measurement: bytes, host: bytes) -> None:
    policy = KeyReleasePolicy(rules=(rule,))
    expected = rule.any_attested or (
        (rule.measurements is None or measurement in rule.measurements)
        and (rule.host_data is None or host in rule.host_data)
    )
    assert policy.allows(rule.resource, measurement=measurement, host_data=host) is expected
    for m in rule.measurements or ():
        for h in rule.host_data or (host,):
            assert policy.allows(rule.resource, measurement=m, host_data=h)
    assert not policy.allows(rule.resource + "x", measurement=measurement, host_data=host)


def test_release_rule_invariants() -> None:
    with pytest.raises(PolicyError):
        ReleaseRule("a")
    with pytest.raises(PolicyError):
        ReleaseRule("a", measurements=(M1,), any_attested=True)
    with pytest.raises(PolicyError):
        ReleaseRule("a", measurements=(M1, M1))
    with pytest.raises(PolicyError):
        ReleaseRule("a", host_data=(M1,))


# -------------------------------------------------------------------------------- egress


@pytest.mark.parametrize(
    ("entry", "destination", "allowed"),
    [
        ("https://cloud.example/v1/infer", "https://cloud.example/v1/infer", True),
        ("https://cloud.example/v1/infer", "https://cloud.example:443/v1/infer/batch", True),
        ("https://cloud.example/v1/infer", "https://CLOUD.example/v1/infer/", True),
        ("https://cloud.example/v1/infer", "https://cloud.example/v1/inference", False),
        ("https://cloud.example/v1/infer", "https://cloud.example/v1", False),
        ("https://cloud.example/v1/infer", "http://cloud.example/v1/infer", False),
        ("https://cloud.example/v1/infer", "https://cloud.example:8443/v1/infer", False),
        ("https://cloud.example/v1/infer", "https://cloud.example.evil/v1/infer", False),
        ("https://cloud.example/v1/infer", "https://evil@cloud.example/v1/infer", False),
        ("https://cloud.example/v1/infer", "https://cloud.example/v1/infer?x=1", False),
        ("https://cloud.example/v1/infer", "https://cloud.example/v1/infer/../admin", False),
        ("https://cloud.example/v1/infer", "https://cloud.example/v1/infer/%2e%2e", False),
        ("https://cloud.example/v1/infer", "cloud.example:443", False),
        ("https://cloud.example", "https://cloud.example/anything/at/all", True),
        ("https://cloud.example/", "https://cloud.example", True),
        ("http://10.0.0.7:8080", "http://10.0.0.7:8080/x", True),
        ("http://10.0.0.7:8080", "http://10.0.0.07:8080/x", False),
        ("cloud.example:9000", "cloud.example:9000", True),
        ("cloud.example:9000", "https://cloud.example:9000/v1", True),
        ("cloud.example:9000", "http://cloud.example:9000", True),
        ("cloud.example:9000", "cloud.example:9001", False),
        ("[::1]:9000", "http://[0:0::1]:9000/x", True),
        ("[::1]:9000", "[::2]:9000", False),
        ("https://cloud.example", "not a url", False),
        ("https://kloud.example", "https://\u212aloud.example", False),
        ("https://cloud.example", "ftp://cloud.example", False),
    ],
)
def test_egress_destination_matching(entry: str, destination: str, allowed: bool) -> None:
    policy = EgressPolicy.from_toml(_egress_text(destinations=json.dumps([entry])))
    assert policy.destination_allowed(destination) is allowed


@pytest.mark.parametrize(
    "text",
    [
        "cloud.example",  # host:port needs a port
        "https://cloud.example:0",
        "https://cloud.example:65536",
        "https://cloud.example/a//b",
        "https://cloud.example/a/./b",
        "https://cloud.example#frag",
        "https://-bad-.example",
        "https://999.1.1.1",
        "http://[fe80::1%eth0]",
        "ws://cloud.example",
        "::1:80",
        "https://b\u00fccher.example",
    ],
)
def test_endpoint_syntax_rejected(text: str) -> None:
    with pytest.raises(PolicyError):
        Endpoint.parse(text)


@SETTINGS
@given(entry=_endpoints(), extra=_segments)
def test_endpoint_allows_itself_and_below(entry: Endpoint, extra: list[str]) -> None:
    assert Endpoint.parse(str(entry)) == entry
    assert entry.matches(str(entry))
    if entry.is_url:
        below = replace(entry, path=entry.path + tuple(extra))
        assert entry.matches(below)
        assert not entry.matches(replace(entry, port=entry.port % 65535 + 1))


def test_egress_violations() -> None:
    policy = EgressPolicy.from_toml(_egress_text())
    ok = {"codec": "pmc2-fp-128-192/v2", "destination": "https://cloud.example:8443/v1/infer"}
    assert policy.violations(size=8, **ok) == []
    assert policy.violations(size=64, **ok) == []
    assert len(policy.violations(size=65, **ok)) == 1
    assert len(policy.violations(size=0, **ok)) == 1
    assert len(policy.violations(codec="png/v1", size=8, destination="https://x.example")) == 2


# ------------------------------------------------------------------- launch configuration


def test_launch_configuration_digest_is_host_data() -> None:
    template = load_default("launch_config")
    config = template.with_bundle_digest("sha256:" + "AB" * 32)
    assert config.model_bundle_digest == BUNDLE
    host_data = config.host_data()
    assert len(host_data) == 32
    assert host_data == config.digest() == hashlib.sha256(config.canonical_json()).digest()
    assert LaunchConfiguration.from_toml(config.to_toml()).host_data() == host_data
    other = template.with_bundle_digest("sha256:" + "cd" * 32)
    assert other.host_data() != host_data
    assert config.with_bundle_digest(BUNDLE) == config
    with pytest.raises(PolicyError, match="already has"):
        config.with_bundle_digest("sha256:" + "cd" * 32)
    with pytest.raises(PolicyError):
        template.with_bundle_digest("md5:" + "00" * 16)
    with pytest.raises(PolicyError):
        template.with_bundle_digest("sha384:" + "00" * 32)
    # The template writes back without the bundle digest.
    assert "model_bundle_digest" not in template.to_toml()
    assert LaunchConfiguration.from_toml(template.to_toml()) == template


def test_launch_configuration_names_its_egress_policy() -> None:
    config = load_default("launch_config").with_bundle_digest(BUNDLE)
    egress = load_default("egress")
    assert config.check_egress(egress) == []
    changed = replace(egress, max_bytes_per_image=1)
    problems = config.check_egress(changed)
    assert len(problems) == 1 and "digest" in problems[0]
    elsewhere = replace(egress, destinations=(Endpoint.parse("https://x.example"),))
    assert len(config.check_egress(elsewhere)) == 2


def test_launch_configuration_rejects_bad_peers() -> None:
    head = f'schema = "pmc2/launch-config/v1"\negress_policy_digest = "{"00" * 48}"\n[peers]\n'
    error = _parse_error(
        LaunchConfiguration,
        head + 'attestation_service = "a.example:443"\ncloud_inference = "https://c.example"\n',
    )
    assert error.key_path == "launch_config.peers.attestation_service"
    error = _parse_error(LaunchConfiguration, head + 'attestation_service = "https://a.example"\n')
    assert error.key_path == "launch_config.peers.cloud_inference"
    error = _parse_error(
        LaunchConfiguration,
        head.replace("[peers]\n", 'model_bundle_digest = "sha256:00"\n[peers]\n')
        + 'attestation_service = "https://a.example"\ncloud_inference = "https://c.example"\n',
    )
    assert error.key_path == "launch_config.model_bundle_digest"


# ------------------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    from policies._cli import register

    parser = argparse.ArgumentParser(prog="pmc2")
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("bench").add_subparsers(dest="bench")
    register(sub, bench)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


def test_cli_show_and_digest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["policy", "digest", "--default", "egress"]) == 0
    assert capsys.readouterr().out.strip() == load_default("egress").digest_hex()
    path = tmp_path / "launch.toml"
    path.write_text(default_text("launch_config"), encoding="utf-8")
    assert _cli(["policy", "digest", str(path)]) == 1
    assert "template" in capsys.readouterr().err
    assert _cli(["policy", "digest", str(path), "--bundle-digest", BUNDLE]) == 0
    expected = load_default("launch_config").with_bundle_digest(BUNDLE).host_data().hex()
    assert capsys.readouterr().out.strip() == expected
    assert _cli(["policy", "show", "--default", "appraisal"]) == 0
    out = capsys.readouterr().out
    assert load_default("appraisal").digest_hex() in out
    assert AppraisalPolicy.from_toml(out) == load_default("appraisal")
    bad = tmp_path / "bad.toml"
    bad.write_text(_egress_text(colour="1"), encoding="utf-8")
    assert _cli(["policy", "show", str(bad)]) == 1
    assert "egress.colour: unknown key" in capsys.readouterr().err
