"""Cloud inference wire format and credentials (no models)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_infer import (
    ClassifyRequest,
    ClassifyResponse,
    ConfigError,
    CredentialSet,
    Form,
    ImageResult,
    ScoredLabel,
    WireError,
    credential_digest,
    generate_credential,
)
from cloud_infer._config import BatchingOptions, CloudConfig, CloudLimits

CODEC = "pmc2-fp-128-192/v2"


def test_single_round_trip_and_layout() -> None:
    request = ClassifyRequest.single(CODEC, [b"\x42abcd", b"\x42def"], top_k=3)
    data = request.to_bytes()
    assert data[:4] == b"PMCB"
    assert data[4:8] == bytes([1, 0, 3, len(CODEC)])
    assert data[8 : 8 + len(CODEC)] == CODEC.encode()
    rest = data[8 + len(CODEC) :]
    assert rest[:6] == struct.pack(">HHH", 2, 5, 4)
    assert rest[6:] == b"\x42abcd\x42def"
    assert ClassifyRequest.from_bytes(data) == request
    assert request.payload_bytes == 9


def test_batch_round_trip_and_layout() -> None:
    request = ClassifyRequest.batch(CODEC, b"\x52\x05payload!", 5)
    data = request.to_bytes()
    assert data[5] == 1 and data[6] == 1
    rest = data[8 + len(CODEC) :]
    assert rest[:6] == struct.pack(">HI", 5, 10)
    assert ClassifyRequest.from_bytes(data) == request
    assert request.form is Form.BATCH and request.count == 5


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:7], "truncated"),
        (lambda d: b"XMCB" + d[4:], "magic"),
        (lambda d: d[:4] + b"\x02" + d[5:], "version"),
        (lambda d: d[:5] + b"\x07" + d[6:], "form"),
        (lambda d: d[:6] + b"\x00" + d[7:], "top_k"),
        (lambda d: d[:6] + b"\x65" + d[7:], "top_k"),
        (lambda d: d[:7] + b"\x00" + d[8:], "codec id length"),
        (lambda d: d[:7] + b"\x49" + d[8:], "codec id length"),
        (lambda d: d[:8] + b"P" + d[9:], "codec id"),
        (lambda d: d[:8] + b"\xff" + d[9:], "ASCII"),
        (lambda d: d + b"\x00", "trailing"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[: 8 + len(CODEC)] + b"\x00\x00" + d[10 + len(CODEC) :], "count"),
        (lambda d: d[: 10 + len(CODEC)] + b"\x00\x00" + d[12 + len(CODEC) :], "length 0"),
        (lambda d: d[: 10 + len(CODEC)] + b"\xff\xff" + d[12 + len(CODEC) :], "truncated"),
    ],
)
def test_strict_parsing(mutate: object, message: str) -> None:
    data = ClassifyRequest.single(CODEC, [b"\x42abcd", b"\x42def"]).to_bytes()
    with pytest.raises(WireError, match=message):
        ClassifyRequest.from_bytes(mutate(data))  # type: ignore[operator]


def test_parse_limits() -> None:
    data = ClassifyRequest.single(CODEC, [b"x" * 10, b"y"]).to_bytes()
    with pytest.raises(WireError, match="count"):
        ClassifyRequest.from_bytes(data, max_count=1)
    with pytest.raises(WireError, match="length 10"):
        ClassifyRequest.from_bytes(data, max_string_bytes=9)
    stream = ClassifyRequest.batch(CODEC, b"z" * 100, 3).to_bytes()
    with pytest.raises(WireError, match="stream length"):
        ClassifyRequest.from_bytes(stream, max_stream_bytes=99)
    with pytest.raises(WireError, match="truncated"):
        ClassifyRequest.from_bytes(stream[:-1])
    with pytest.raises(WireError, match="bytes"):
        ClassifyRequest.from_bytes("text")  # type: ignore[arg-type]


def test_request_invariants() -> None:
    with pytest.raises(WireError):
        ClassifyRequest.single("Bad Codec", [b"x"])
    with pytest.raises(WireError):
        ClassifyRequest.single(CODEC, [])
    with pytest.raises(WireError):
        ClassifyRequest.single(CODEC, [b""])
    with pytest.raises(WireError):
        ClassifyRequest.single(CODEC, [b"x"], top_k=101)
    with pytest.raises(WireError):
        ClassifyRequest(CODEC, Form.BATCH, 2, (b"a", b"b"))
    with pytest.raises(WireError):
        ClassifyRequest(CODEC, Form.SINGLE, 2, (b"a",))
    with pytest.raises(WireError):
        ClassifyRequest.single(CODEC, [b"x" * 65536])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_wire_error(data: bytes) -> None:
    try:
        request = ClassifyRequest.from_bytes(data)
    except WireError:
        return
    assert request.to_bytes() == data


@settings(max_examples=300)
@given(
    st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=5),
    st.integers(0, 200),
    st.integers(0, 255),
)
def test_mutated_bodies_only_raise_wire_error(strings: list[bytes], pos: int, byte: int) -> None:
    data = bytearray(ClassifyRequest.single(CODEC, strings, top_k=2).to_bytes())
    if pos < len(data):
        data[pos] = byte
    else:
        data.append(byte)
    try:
        request = ClassifyRequest.from_bytes(bytes(data))
    except WireError:
        return
    assert request.to_bytes() == bytes(data)


def _response() -> ClassifyResponse:
    return ClassifyResponse(
        codec=CODEC,
        results=(
            ImageResult(3, (ScoredLabel(3, 900_000), ScoredLabel(5, 50_000)), "cat"),
            ImageResult(1, (ScoredLabel(1, 999_999),)),
        ),
        timings_us={"classify": 10, "entropy_decode": 5},
        bundle_digest="ab" * 48,
        batch_images=7,
    )


def test_response_round_trip() -> None:
    response = _response()
    data = response.to_bytes()
    value = json.loads(data)
    assert value["count"] == 2
    assert value["results"][0] == {
        "label": 3,
        "label_name": "cat",
        "top_k": [{"label": 3, "score_ppm": 900000}, {"label": 5, "score_ppm": 50000}],
    }
    assert ClassifyResponse.from_bytes(data, expected_count=2) == response
    assert response.results[0].top_k[0].score == 0.9
    with pytest.raises(WireError, match="expected 3"):
        ClassifyResponse.from_bytes(data, expected_count=3)


@pytest.mark.parametrize(
    "edit",
    [
        lambda v: v.update(count=3),
        lambda v: v.update(extra=1),
        lambda v: v.pop("codec"),
        lambda v: v["results"][0].update(label=4),
        lambda v: v["results"][0]["top_k"].reverse(),
        lambda v: v["results"][0]["top_k"][1].update(label=3),
        lambda v: v["results"][0]["top_k"][0].update(score_ppm=1_000_001),
        lambda v: v["results"][0].update(label_name=""),
        lambda v: v["results"][1].update(label=True),
        lambda v: v.update(results=[]),
        lambda v: v.update(bundle_digest="xy"),
        lambda v: v["timings_us"].update(Bad=1),
        lambda v: v["timings_us"].update(queue=-1),
        lambda v: v.update(batch_images=-1),
        lambda v: v.pop("batch_images"),
    ],
)
def test_response_strictness(edit: object) -> None:
    value = json.loads(_response().to_bytes())
    edit(value)  # type: ignore[operator]
    with pytest.raises(WireError):
        ClassifyResponse.from_bytes(json.dumps(value).encode())


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_response_garbage_only_raises_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        ClassifyResponse.from_bytes(data)


# --- credentials ------------------------------------------------------------------------


def test_credentials_and_rotation(tmp_path: Path) -> None:
    old, new = generate_credential(), generate_credential()
    assert len(old) == 43 and old != new
    assert credential_digest(old) == hashlib.sha256(old.encode()).digest()
    path = tmp_path / "creds"
    path.write_text(f"# rotation: both accepted\n{old}\n\nsha256:{credential_digest(new).hex()}\n")
    accepted = CredentialSet.from_file(path)
    assert accepted.matches(old) and accepted.matches(new)
    assert not accepted.matches(generate_credential())
    assert not accepted.matches("")
    assert not accepted.matches(old[:-1])
    assert not accepted.matches(old + " ")
    assert not accepted.matches("é" * 40)
    assert CredentialSet.of([old]).matches(old)


def test_credential_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        CredentialSet.from_text("# ok\nshort\n")
    with pytest.raises(ConfigError, match="at least one"):
        CredentialSet.from_text("# nothing\n")
    with pytest.raises(ConfigError, match="cannot read"):
        CredentialSet.from_file(tmp_path / "missing")
    (tmp_path / "bin").write_bytes(b"\xff" * 40)
    with pytest.raises(ConfigError, match="ASCII"):
        CredentialSet.from_file(tmp_path / "bin")
    with pytest.raises(ConfigError):
        credential_digest("too short")
    with pytest.raises(ConfigError):
        CredentialSet(frozenset({b"short"}))


def test_config_invariants(tmp_path: Path) -> None:
    creds = CredentialSet.of([generate_credential()])
    with pytest.raises(ConfigError):
        CloudConfig(tmp_path, creds, codec_id="Nope")
    with pytest.raises(ConfigError):
        CloudConfig(tmp_path, creds, image_size=(30, 32))
    with pytest.raises(ConfigError):
        CloudConfig(tmp_path, creds, image_size=(32 * 16, 32))
    with pytest.raises(ConfigError):
        CloudConfig(tmp_path, creds, label_names=("",))
    with pytest.raises(ConfigError):
        CloudLimits(max_batch=0)
    with pytest.raises(ConfigError):
        CloudLimits(request_timeout_s=float("nan"))
    with pytest.raises(ConfigError):
        BatchingOptions(max_wait_s=-1)
    assert BatchingOptions(max_wait_s=0).max_wait_s == 0


@settings(max_examples=150)
@given(
    codec=st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}/v[1-9][0-9]{0,3}", fullmatch=True),
    strings=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=6),
    top_k=st.integers(1, 100),
    batch=st.booleans(),
)
def test_request_round_trip(codec: str, strings: list[bytes], top_k: int, batch: bool) -> None:
    if batch:
        request = ClassifyRequest.batch(codec, b"".join(strings), len(strings), top_k=top_k)
    else:
        request = ClassifyRequest.single(codec, strings, top_k=top_k)
    data = request.to_bytes()
    assert ClassifyRequest.from_bytes(data) == request
    assert len(data) == 8 + len(codec) + 2 + (
        4 + len(request.strings[0]) if batch else 2 * len(strings) + sum(map(len, strings))
    )
