"""The paper's S2 through the client: the bit-string sizes the enclave's egress guard
sent (protocol.md 6.3.1) in ``BytesSent``, in ``to_dict`` and in ``pmc2 classify``;
asking is the default and can be turned off (enclaves that predate the member)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from client import BytesSent, ProtocolError, ServerRefused
from client._cli import EXIT_OK
from cloud_infer import ClassifyRequest
from sealed import (
    BitstringSizes,
    EnclaveKeyPair,
    InferenceResult,
    MalformedError,
    OpenedRequest,
    ScoredLabel,
    open_request,
)
from tests import _enclave_support as es
from tests.test_client import Harness, Recorder, Switch, harness, jpeg_bytes, sync_client
from tests.test_client_cli import run

__all__ = ["harness"]  # the module-scoped stack fixture, shared with test_client


def _last_batch(h: Harness) -> tuple[int, int]:
    """(images, bit-string bytes) of the last batch the fake cloud received."""
    parsed = ClassifyRequest.from_bytes(h.stack.cloud.requests[-1].content)
    return parsed.count, sum(len(s) for s in parsed.strings)


def test_bytes_sent_carries_what_the_enclave_sent(harness: Harness) -> None:
    with sync_client(harness, Recorder(harness.apps)) as c:
        result = c.classify_one(jpeg_bytes(40))
    sent = result.bytes_sent
    count, total = _last_batch(harness)
    assert (sent.batch_images, sent.bitstring_batch) == (count, total)
    assert sent.bitstring is None  # the enclave sends the batch form: one shared stream
    assert sent.bitstring_batch_share == sent.bitstring_per_image == total / count
    as_json = result.to_dict()["bytes_sent"]
    assert as_json["bitstring_batch"] == total and as_json["batch_images"] == count
    assert as_json["bitstring"] is None and as_json["bitstring_per_image"] == total / count
    assert json.dumps(as_json)


def test_not_asked(harness: Harness) -> None:
    with sync_client(harness, Recorder(harness.apps), sizes=False) as c:
        result = c.classify_one(jpeg_bytes(41))
    sent = result.bytes_sent
    assert (sent.bitstring, sent.bitstring_batch, sent.batch_images) == (None, None, None)
    assert sent.bitstring_batch_share is None and sent.bitstring_per_image is None
    assert result.to_dict()["bytes_sent"]["bitstring_per_image"] is None


def test_decimal_format() -> None:
    from client._cli import _decimal

    assert [_decimal(v) for v in (261 / 32, 9.5, 31.0, 0.004, None)] == [
        "8.16",
        "9.5",
        "31",
        "0",
        "-",
    ]


def test_bytes_sent_values() -> None:
    own = BytesSent(1, 2, 3, False, bitstring=9, bitstring_batch=27, batch_images=3)
    assert (own.bitstring_per_image, own.bitstring_batch_share) == (9.0, 9.0)
    shared = BytesSent(1, 2, 3, True, bitstring_batch=261, batch_images=32)
    assert shared.bitstring_per_image == shared.bitstring_batch_share == 261 / 32
    assert BytesSent(1, 2, 3, True).to_dict() == {
        "jpeg": 1,
        "envelope": 2,
        "response": 3,
        "reencoded": True,
        "bitstring": None,
        "bitstring_batch": None,
        "batch_images": None,
        "bitstring_batch_share": None,
        "bitstring_per_image": None,
    }


# --- stand-in replicas: other enclave behaviours behind the real gateway ---------------

Answer = Callable[[OpenedRequest], Response]


def _stand_in(h: Harness, answer: Answer) -> dict[str, Starlette]:
    """A replica with its own X25519 key, attested by the real service (simulated
    evidence binding the key), answering with ``answer``."""
    pair = EnclaveKeyPair.generate()
    token = h.stack.env.client.attest(h.stack.provider, pair.public_key).token

    async def attestation(request: Request) -> Response:
        jwk = pair.public_key.to_jwk()
        return JSONResponse({"key_id": pair.key_id.hex, "token": token, "public_key_jwk": jwk})

    async def infer(request: Request) -> Response:
        return answer(open_request(await request.body(), pair))

    replica = Starlette(
        routes=[
            Route("/internal/attestation", attestation, methods=["GET"]),
            Route("/internal/infer", infer, methods=["POST"]),
        ]
    )
    return {**h.apps, "gateway.test": h.new_gateway(Switch(replica))}


_RESULT = InferenceResult(label=4, top_k=(ScoredLabel(4, 700_000),), label_name="deer")


def _sealed(opened: OpenedRequest, result: InferenceResult) -> Response:
    return Response(opened.seal_response(result), media_type="application/octet-stream")


def test_single_form_enclave(harness: Harness) -> None:
    sizes = BitstringSizes(batch_images=4, batch_bitstring_bytes=37, bitstring_bytes=10)
    apps = _stand_in(harness, lambda o: _sealed(o, dataclasses.replace(_RESULT, sizes=sizes)))
    with sync_client(harness, Recorder(apps)) as c:
        sent = c.classify_one(jpeg_bytes(42)).bytes_sent
    assert (sent.bitstring, sent.bitstring_batch, sent.batch_images) == (10, 37, 4)
    assert sent.bitstring_per_image == 10.0 and sent.bitstring_batch_share == 9.25


def _predating(opened: OpenedRequest) -> Response:
    """An enclave older than the member: its strict options parser refuses ``sizes``."""
    if opened.options.sizes:
        problem = MalformedError("options has unknown members ['sizes']").to_problem()
        return JSONResponse(problem, status_code=400, media_type="application/problem+json")
    return _sealed(opened, _RESULT)


def test_enclave_predating_sizes(harness: Harness) -> None:
    apps = _stand_in(harness, _predating)
    with (
        sync_client(harness, Recorder(apps)) as c,
        pytest.raises(ServerRefused, match="sizes") as info,
    ):
        c.classify_one(jpeg_bytes(43))
    assert info.value.status == 400
    with sync_client(harness, Recorder(apps), sizes=False) as c:
        result = c.classify_one(jpeg_bytes(43))
    assert result.label_name == "deer" and result.bytes_sent.bitstring_batch is None


def test_enclave_omitting_asked_sizes_is_a_protocol_error(harness: Harness) -> None:
    apps = _stand_in(harness, lambda o: _sealed(o, _RESULT))
    with (
        sync_client(harness, Recorder(apps)) as c,
        pytest.raises(ProtocolError, match="lacks the sizes"),
    ):
        c.classify_one(jpeg_bytes(44))


# --- pmc2 classify ------------------------------------------------------------------------


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "photo.jpg"
    path.write_bytes(es.jpeg(seed=45))
    return str(path)


def test_classify_prints_s2(
    harness: Harness, image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run(harness, [image])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    count, total = _last_batch(harness)
    noun = "image" if count == 1 else "images"
    share = f"{total / count:.2f}".rstrip("0").rstrip(".")
    assert (
        f"  to the cloud: bit-string {share} B per image (one {total} B stream for {count} {noun})"
        in out
    )


def test_classify_json_s2_and_no_sizes(
    harness: Harness, image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run(harness, [image, "--json"])
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    count, total = _last_batch(harness)
    sent = doc["results"][0]["bytes_sent"]
    assert (sent["batch_images"], sent["bitstring_batch"], sent["bitstring"]) == (
        count,
        total,
        None,
    )
    assert sent["bitstring_per_image"] == total / count
    code, _ = run(harness, [image, "--no-sizes"])
    out = capsys.readouterr().out
    assert code == EXIT_OK and "sent JPEG" in out and "to the cloud" not in out


def test_classify_prints_own_string(
    harness: Harness,
    image: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = BitstringSizes(batch_images=1, batch_bitstring_bytes=11, bitstring_bytes=11)
    apps = _stand_in(harness, lambda o: _sealed(o, dataclasses.replace(_RESULT, sizes=sizes)))
    monkeypatch.setattr(harness, "apps", apps)
    code, _ = run(harness, [image])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "  to the cloud: bit-string 11 B (its own string; 11 B for a batch of 1 image)" in out
