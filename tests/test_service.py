"""The attestation service over ASGI with the simulated platform: attest, verify, key release."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from attestation import (
    AttestationClient,
    ServiceConfig,
    ServiceRefusedError,
    TokenError,
    open_released_secret,
    runtime_data,
    runtime_data_hash,
    verify_attestation_token,
)
from attestation._service._binding import b64url_encode
from attestation._service._store import Store
from policies import load_default
from sealed import DEFAULT_SUITE, SUITE_MLKEM768_X25519, EnclaveKeyPair
from tests._service_support import (
    MEASUREMENT,
    OTHER_MEASUREMENT,
    Env,
    async_client,
    close_env,
    env_fixture,
    guest,
    host_data,
    launch_config,
    open_env,
    platform,
)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from env_fixture(tmp_path)


def refused(excinfo: pytest.ExceptionInfo[ServiceRefusedError]) -> ServiceRefusedError:
    return excinfo.value


# --------------------------------------------------------------------------- binding


def test_runtime_data_is_canonical_and_hash_is_sha384_zero_padded() -> None:
    key = EnclaveKeyPair.from_private_bytes(DEFAULT_SUITE, b"\x07" * 32).public_key
    nonce = bytes(range(32))
    encoded = runtime_data(nonce, key)
    doc = json.loads(encoded)
    assert list(doc) == ["nonce", "tee-pubkey"]
    assert doc["nonce"] == b64url_encode(nonce)
    assert doc["tee-pubkey"] == key.to_jwk()
    assert b" " not in encoded
    assert encoded == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    digest = runtime_data_hash(nonce, key)
    assert len(digest) == 64 and digest[48:] == bytes(16)
    import hashlib

    assert digest[:48] == hashlib.sha384(encoded).digest()
    other = EnclaveKeyPair.generate().public_key
    assert runtime_data_hash(nonce, other) != digest
    assert runtime_data_hash(b"\x00" * 32, key) != digest


# ---------------------------------------------------------------------- whole flow


def test_whole_flow_attest_token_and_key_release(env: Env) -> None:
    reg = env.register()
    assert reg["host_data"] == host_data().hex()
    result, key_pair = env.attest()
    # the token verifies against the service's JWKS, bound to our key
    checked = verify_attestation_token(
        result.token,
        env.client.jwks(),
        at=env.clock(),
        issuer="pmc2-attestation-service",
        expected_key=key_pair.public_key,
        allow_warning=True,
    )
    assert checked.measurement == MEASUREMENT
    assert checked.host_data == host_data() == checked.launch_config_digest
    assert checked.status == "warning" and not checked.amd_root  # simulated root
    assert checked.trust_vector["hardware"] == 32
    assert checked.nonce_source == "service"
    assert checked.key_id == key_pair.key_id.hex
    assert checked.reported_tcb == platform().reported_tcb.components()
    assert checked.appraisal_policy_digest == load_default("appraisal").digest_hex()
    assert checked.key_release_policy_digest == load_default("key_release").digest_hex()
    assert checked.reference_value == {"id": reg["id"], "label": "enclave v1"}
    assert checked.launch_config is not None
    assert checked.launch_config["egress_policy_digest"] == (
        launch_config().egress_policy_digest.hex()
    )
    assert checked.expires_at - checked.issued_at == dt.timedelta(seconds=3600)
    claims = checked.claims
    assert claims["eat_profile"] == "tag:github.com,2023:veraison/ear"
    assert claims["cnf"]["jwk"] == key_pair.public_key.to_jwk()
    # without allow_warning a relying party refuses a simulated-root token
    with pytest.raises(TokenError, match="status is warning"):
        verify_attestation_token(result.token, env.client.jwks(), at=env.clock())
    # key release: the secret arrives as a JWE only our key opens
    env.admin.put_resource("model-bundle-key", b"\x42" * 32)
    secret = env.client.resource("model-bundle-key", result.token, key_pair)
    assert secret == b"\x42" * 32
    events = [(e["event"], e["outcome"]) for e in env.admin.audit()["entries"]]
    assert ("attest", "warning") in events
    assert ("release", "released") in events


def test_challenge_nonces_are_32_random_bytes(env: Env) -> None:
    first, second = env.client.challenge(), env.client.challenge()
    assert len(first) == len(second) == 32 and first != second


def test_replayed_nonce_is_refused(env: Env) -> None:
    env.register()
    key_pair = EnclaveKeyPair.generate()
    nonce = env.client.challenge()
    evidence = env.client.evidence(guest(), nonce, key_pair.public_key)
    env.client.submit(nonce, key_pair.public_key, evidence)
    with pytest.raises(ServiceRefusedError) as excinfo:
        env.client.submit(nonce, key_pair.public_key, evidence)
    err = refused(excinfo)
    assert err.status == 403 and err.type == "urn:pmc2:problem:nonce-rejected"
    assert "already used" in err.detail and err.trust_failure


def test_expired_nonce_is_refused(env: Env) -> None:
    env.register()
    key_pair = EnclaveKeyPair.generate()
    nonce = env.client.challenge()
    evidence = env.client.evidence(guest(), nonce, key_pair.public_key)
    env.clock.advance(301)
    with pytest.raises(ServiceRefusedError, match="expired"):
        env.client.submit(nonce, key_pair.public_key, evidence)


def test_unknown_nonce_is_refused(env: Env) -> None:
    env.register()
    key_pair = EnclaveKeyPair.generate()
    nonce = b"\x01" * 32
    evidence = env.client.evidence(guest(), nonce, key_pair.public_key)
    with pytest.raises(ServiceRefusedError, match="not issued by this service"):
        env.client.submit(nonce, key_pair.public_key, evidence)


def test_failed_attestation_still_burns_the_nonce(env: Env) -> None:
    key_pair = EnclaveKeyPair.generate()
    nonce = env.client.challenge()
    evidence = env.client.evidence(guest(), nonce, key_pair.public_key)
    with pytest.raises(ServiceRefusedError, match="appraisal"):
        env.client.submit(nonce, key_pair.public_key, evidence)  # not registered yet
    env.register()
    with pytest.raises(ServiceRefusedError, match="already used"):
        env.client.submit(nonce, key_pair.public_key, evidence)


def test_token_presented_for_another_key(env: Env) -> None:
    env.register()
    env.admin.put_resource("model-bundle-key", b"s" * 32)
    result, key_pair = env.attest()
    intruder = EnclaveKeyPair.generate()
    with pytest.raises(TokenError, match="bound to enclave key"):
        verify_attestation_token(
            result.token,
            env.client.jwks(),
            at=env.clock(),
            expected_key=intruder.public_key,
            allow_warning=True,
        )
    # whoever presents the token gets a JWE that only the attested key opens
    sealed = env.client.fetch_resource("model-bundle-key", result.token)
    with pytest.raises(TokenError):
        open_released_secret(sealed, intruder)
    assert open_released_secret(sealed, key_pair) == b"s" * 32
    # and a client expecting the intruder's key refuses the attestation
    with pytest.raises(TokenError):
        AttestationClient._result(env.client, {"token": result.token}, intruder.public_key)


def test_tampered_token_is_refused(env: Env) -> None:
    env.register()
    env.admin.put_resource("model-bundle-key", b"s" * 32)
    result, _ = env.attest()
    head, payload, sig = result.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["submods"]["sev-snp"]["pmc2.measurement"] = OTHER_MEASUREMENT.hex()
    forged_payload = b64url_encode(json.dumps(claims).encode())
    forged = f"{head}.{forged_payload}.{sig}"
    with pytest.raises(TokenError, match="signature"):
        verify_attestation_token(forged, env.client.jwks(), at=env.clock(), allow_warning=True)
    with pytest.raises(ServiceRefusedError) as excinfo:
        env.client.fetch_resource("model-bundle-key", forged)
    assert refused(excinfo).status == 401


def test_expired_token_is_refused(env: Env) -> None:
    env.register()
    env.admin.put_resource("model-bundle-key", b"s" * 32)
    result, _ = env.attest()
    env.clock.advance(3601)
    with pytest.raises(TokenError, match="expired"):
        verify_attestation_token(
            result.token, env.client.jwks(), at=env.clock(), allow_warning=True
        )
    with pytest.raises(ServiceRefusedError, match="expired"):
        env.client.fetch_resource("model-bundle-key", result.token)


# ------------------------------------------------------------------ appraisal failures


def _failures(env: Env, provider: Any = None, **kwargs: Any) -> list[str]:
    with pytest.raises(ServiceRefusedError) as excinfo:
        env.attest(provider or guest(**kwargs))
    err = refused(excinfo)
    assert err.status == 403 and err.trust_failure
    assert err.type == "urn:pmc2:problem:appraisal-failed"
    assert err.problem["ear_status"] == "contraindicated"
    return err.failures


def test_unregistered_measurement_is_refused(env: Env) -> None:
    env.register(OTHER_MEASUREMENT)
    failures = _failures(env)
    assert any(f.startswith("MEASUREMENT") for f in failures)


def test_revoked_reference_value_is_refused_and_stops_release(env: Env) -> None:
    reg = env.register()
    env.admin.put_resource("model-bundle-key", b"s" * 32)
    result, key_pair = env.attest()
    env.admin.revoke(reg["id"])
    assert env.admin.reference_values()[0]["state"] == "revoked"
    assert any(f.startswith("MEASUREMENT") for f in _failures(env))
    with pytest.raises(ServiceRefusedError, match="no longer accepted") as excinfo:
        env.client.resource("model-bundle-key", result.token, key_pair)
    assert refused(excinfo).status == 403


def test_expired_reference_value_is_refused(env: Env) -> None:
    now = int(env.clock().timestamp())
    env.register(expires_at=now + 100)
    result, _ = env.attest()
    # the token does not outlive the registration
    assert result.expires_at.timestamp() == now + 100
    env.clock.advance(200)
    assert env.admin.reference_values()[0]["state"] == "expired"
    assert any(f.startswith("MEASUREMENT") for f in _failures(env))


def test_debug_guest_is_refused(env: Env) -> None:
    env.register()
    failures = _failures(env, debug=True)
    assert any("POLICY.DEBUG" in f for f in failures)


def test_wrong_host_data_is_refused(env: Env) -> None:
    env.register()
    failures = _failures(env, host=b"\x99" * 32)
    assert any(f.startswith("HOST_DATA") for f in failures)


def test_report_data_not_binding_the_key_is_refused(env: Env) -> None:
    env.register()
    real, other = EnclaveKeyPair.generate(), EnclaveKeyPair.generate()
    nonce = env.client.challenge()
    evidence = env.client.evidence(guest(), nonce, real.public_key)
    with pytest.raises(ServiceRefusedError) as excinfo:
        env.client.submit(nonce, other.public_key, evidence)
    assert any("REPORT_DATA" in f for f in refused(excinfo).failures)


def test_report_data_binding_another_nonce_is_refused(env: Env) -> None:
    env.register()
    key_pair = EnclaveKeyPair.generate()
    nonce = env.client.challenge()
    evidence = env.client.evidence(guest(), b"\x00" * 32, key_pair.public_key)
    with pytest.raises(ServiceRefusedError) as excinfo:
        env.client.submit(nonce, key_pair.public_key, evidence)
    assert any("REPORT_DATA" in f for f in refused(excinfo).failures)


def test_evidence_from_an_untrusted_root_is_not_authentic(tmp_path: Path) -> None:
    # the same service without the simulated root configured: AMD's pins only
    env = open_env(tmp_path / "state", insecure_roots=None)
    try:
        env.register()
        with pytest.raises(ServiceRefusedError) as excinfo:
            env.attest()
        err = refused(excinfo)
        assert err.status == 403 and err.type.endswith("evidence-not-authentic")
        assert "not a trusted Milan root" in err.detail
    finally:
        close_env(env)


def test_all_failures_are_reported_together(env: Env) -> None:
    env.register()
    failures = _failures(env, debug=True, host=b"\x98" * 32)
    assert any("POLICY.DEBUG" in f for f in failures)
    assert any(f.startswith("HOST_DATA") for f in failures)


# ------------------------------------------------------------------------ key release


def test_resource_the_policy_denies(env: Env) -> None:
    env.register()
    env.admin.put_resource("model-bundle-key", b"s" * 32)
    env.admin.put_resource("other-secret", b"o" * 8)
    other_host = "ab" * 32
    env.admin.set_policy(
        "key-release",
        f"""schema = "pmc2/key-release/v1"
[[rules]]
resource = "model-bundle-key"
host_data = ["{other_host}"]
""",
    )
    result, key_pair = env.attest()
    with pytest.raises(ServiceRefusedError, match="denies") as excinfo:
        env.client.resource("model-bundle-key", result.token, key_pair)
    assert refused(excinfo).status == 403
    with pytest.raises(ServiceRefusedError, match="no rule") as excinfo:
        env.client.resource("other-secret", result.token, key_pair)
    # a resource that does not exist and has no rule: denied, not "unknown"
    with pytest.raises(ServiceRefusedError) as excinfo:
        env.client.resource("nonexistent", result.token, key_pair)
    assert refused(excinfo).status == 403
    refusals = [e for e in env.admin.audit()["entries"] if e["event"] == "release"]
    assert [e["outcome"] for e in refusals] == ["refused"] * 3
    assert all(e["detail"]["key_id"] == key_pair.key_id.hex for e in refusals)


def test_release_follows_a_matching_rule_and_rotation(env: Env) -> None:
    env.register()
    env.admin.set_policy(
        "key-release",
        f"""schema = "pmc2/key-release/v1"
[[rules]]
resource = "model-bundle-key"
measurements = ["{MEASUREMENT.hex()}"]
host_data = ["{host_data().hex()}"]
""",
    )
    env.admin.put_resource("model-bundle-key", b"v1")
    result, key_pair = env.attest()
    assert env.client.resource("model-bundle-key", result.token, key_pair) == b"v1"
    rotated = env.admin.rotate_resource("model-bundle-key")
    assert rotated["version"] == 2
    new = env.client.resource("model-bundle-key", result.token, key_pair)
    assert len(new) == 32 and new != b"v1"


def test_unknown_resource_with_a_rule_is_404(env: Env) -> None:
    env.register()
    result, key_pair = env.attest()
    with pytest.raises(ServiceRefusedError) as excinfo:
        env.client.resource("model-bundle-key", result.token, key_pair)
    assert refused(excinfo).status == 404


def test_release_without_a_token_is_401(env: Env) -> None:
    response = env.http.get("/v1/resource/model-bundle-key")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert "Bearer" in response.headers["www-authenticate"]


def test_xwing_enclave_key_attests_but_needs_x25519_for_release(env: Env) -> None:
    env.register()
    env.admin.put_resource("model-bundle-key", b"s" * 32)
    key_pair = EnclaveKeyPair.generate(SUITE_MLKEM768_X25519)
    result = env.client.attest(guest(), key_pair)
    assert result.public_key.suite == SUITE_MLKEM768_X25519
    with pytest.raises(ServiceRefusedError) as excinfo:
        env.client.fetch_resource("model-bundle-key", result.token)
    assert refused(excinfo).status == 422


# ------------------------------------------------------------------- /v1/verify


def test_verify_with_a_client_nonce(env: Env) -> None:
    env.register()
    env.admin.put_resource("model-bundle-key", b"s" * 32)
    key_pair = EnclaveKeyPair.generate()
    nonce = b"client-nonce-0123456789"
    evidence = env.client.evidence(guest(), nonce, key_pair.public_key)
    result = env.client.verify(nonce, key_pair.public_key, evidence)
    assert result.nonce == nonce and result.nonce_source == "client"
    assert result.measurement == MEASUREMENT
    # verification results never release keys
    with pytest.raises(ServiceRefusedError, match="never release") as excinfo:
        env.client.resource("model-bundle-key", result.token, key_pair)
    assert refused(excinfo).status == 403
    # the client's nonce is not consumed: the same evidence verifies again
    assert env.client.verify(nonce, key_pair.public_key, evidence).nonce == nonce


def test_verify_refuses_a_debug_guest(env: Env) -> None:
    env.register()
    key_pair = EnclaveKeyPair.generate()
    nonce = b"n" * 16
    evidence = env.client.evidence(guest(debug=True), nonce, key_pair.public_key)
    with pytest.raises(ServiceRefusedError) as excinfo:
        env.client.verify(nonce, key_pair.public_key, evidence)
    assert any("POLICY.DEBUG" in f for f in refused(excinfo).failures)


def test_real_milan_vector_refused_under_no_debug_policy(tmp_path: Path, snp_vectors: Path) -> None:
    """The real Milan report is authentic against AMD's roots, and refused: DEBUG is set."""
    d = snp_vectors / "go-sev-guest-milan"
    env = open_env(tmp_path / "state", insecure_roots=None)
    env.clock.now = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    try:
        assert load_default("appraisal").forbid_debug
        key = EnclaveKeyPair.generate().public_key
        evidence = {
            "report": b64url_encode((d / "attestation.bin").read_bytes()),
            "vcek": b64url_encode((d / "vcek.der").read_bytes()),
            "cert_chain": (d / "ask_ark.pem").read_text(),
        }
        with pytest.raises(ServiceRefusedError) as excinfo:
            env.client.verify(b"\x00" * 16, key, evidence)
        err = refused(excinfo)
        # authentic (the chain and signature verified), refused by appraisal
        assert err.status == 403 and err.type.endswith("appraisal-failed")
        assert any("POLICY.DEBUG is set" in f and "debug is forbidden" in f for f in err.failures)
    finally:
        close_env(env)


# -------------------------------------------------------------------- persistence


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = open_env(state)
    try:
        env.register()
        env.admin.put_resource("model-bundle-key", b"persisted")
        env.admin.set_policy(
            "appraisal",
            load_default("appraisal")
            .to_toml()
            .replace("token_lifetime_seconds = 3600", "token_lifetime_seconds = 600"),
        )
        result, key_pair = env.attest()
        jwks_before = env.client.jwks()
    finally:
        close_env(env)
    again = open_env(state, operator=env.operator, clock=env.clock)
    try:
        assert [r["label"] for r in again.admin.reference_values()] == ["enclave v1"]
        assert again.client.jwks() == jwks_before
        assert again.client.resource("model-bundle-key", result.token, key_pair) == b"persisted"
        assert again.admin.get_policy("appraisal")["default"] is False
        fresh, _ = again.attest()
        assert (fresh.expires_at - fresh.issued_at).total_seconds() == 600
        assert again.admin.audit()["chain_intact"]
    finally:
        close_env(again)


def test_simulated_root_token_releases_nothing_once_the_service_trusts_only_amd(
    tmp_path: Path,
) -> None:
    # A token issued while the service trusted the simulated root (status "warning") must
    # not release keys after the same state directory is served with AMD's roots only:
    # anyone can make the simulated platform sign any MEASUREMENT.
    state = tmp_path / "state"
    env = open_env(state)
    try:
        env.register()
        env.admin.put_resource("model-bundle-key", b"k" * 32)
        result, key_pair = env.attest()
        assert result.status == "warning"
    finally:
        close_env(env)
    production = open_env(state, operator=env.operator, clock=env.clock, insecure_roots=None)
    try:
        with pytest.raises(ServiceRefusedError) as excinfo:
            production.client.resource("model-bundle-key", result.token, key_pair)
        assert refused(excinfo).status == 401
        assert "warning" in str(refused(excinfo))
    finally:
        close_env(production)


def test_signing_key_rotation_keeps_old_tokens_valid(env: Env) -> None:
    env.register()
    env.admin.put_resource("model-bundle-key", b"s" * 32)
    old, key_pair = env.attest()
    env.admin.rotate_signing_key()
    jwks = env.client.jwks()
    assert len(jwks["keys"]) == 2
    assert env.client.resource("model-bundle-key", old.token, key_pair) == b"s" * 32
    new, _ = env.attest()
    header = json.loads(base64.urlsafe_b64decode(new.token.split(".")[0] + "=="))
    assert (
        header["kid"]
        == jwks["keys"][0]["kid"]
        != (json.loads(base64.urlsafe_b64decode(old.token.split(".")[0] + "=="))["kid"])
    )
    env.clock.advance(86400 + 1)
    assert len(env.client.jwks()["keys"]) == 1


# -------------------------------------------------------------------- concurrency


def test_consume_nonce_is_atomic_across_threads(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    try:
        nonce = b"\x05" * 32
        store.add_nonce(nonce, 2e9, 1e9)
        barrier = threading.Barrier(100)
        wins: list[bool] = []
        lock = threading.Lock()

        def worker() -> None:
            barrier.wait()
            won = store.consume_nonce(nonce, 1e9)
            with lock:
                wins.append(won)

        threads = [threading.Thread(target=worker) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wins.count(True) == 1 and len(wins) == 100
    finally:
        store.close()


def test_100_concurrent_attestations_accept_no_nonce_twice(env: Env) -> None:
    env.register()
    nonces = [env.client.challenge() for _ in range(10)]
    key_pair = EnclaveKeyPair.generate()
    provider = guest()
    bodies = []
    for nonce in nonces:
        evidence = env.client.evidence(provider, nonce, key_pair.public_key)
        body = {
            "nonce": b64url_encode(nonce),
            "public_key": key_pair.public_key.to_jwk(),
            "evidence": evidence,
        }
        bodies.extend([(nonce, body)] * 10)

    async def run() -> list[tuple[bytes, int]]:
        async with async_client(env.app) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/attest", json=body) for _, body in bodies)
            )
        return [(nonce, r.status_code) for (nonce, _), r in zip(bodies, responses, strict=True)]

    outcomes = asyncio.run(run())
    accepted = [nonce for nonce, status in outcomes if status == 200]
    assert sorted(accepted) == sorted(nonces)  # each nonce exactly once
    assert all(status in (200, 403) for _, status in outcomes)


# ------------------------------------------------------------------ KDS fetching


def test_vcek_fetched_from_kds_when_evidence_has_none(tmp_path: Path) -> None:
    import httpx
    from cryptography.hazmat.primitives.serialization import Encoding

    from attestation import KdsClient

    sim = platform()
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if "/vcek/v1/Milan/" in request.url.path and "cert_chain" not in request.url.path:
            return httpx.Response(200, content=sim.vcek.public_bytes(Encoding.DER))
        return httpx.Response(404)

    kds = KdsClient(transport=httpx.MockTransport(handler), cache_dir=tmp_path / "kds")
    env = open_env(tmp_path / "state", kds=kds)
    try:
        env.register()
        key_pair = EnclaveKeyPair.generate()
        nonce = env.client.challenge()
        raw = guest().report(runtime_data_hash(nonce, key_pair.public_key))
        result = env.client.submit(nonce, key_pair.public_key, {"report": b64url_encode(raw)})
        assert result.measurement == MEASUREMENT
        assert len(calls) == 1
    finally:
        close_env(env)
        kds.close()


def test_evidence_without_certificates_and_no_kds_is_422(env: Env) -> None:
    env.register()
    key_pair = EnclaveKeyPair.generate()
    nonce = env.client.challenge()
    raw = guest().report(runtime_data_hash(nonce, key_pair.public_key))
    with pytest.raises(ServiceRefusedError, match="KDS") as excinfo:
        env.client.submit(nonce, key_pair.public_key, {"report": b64url_encode(raw)})
    assert refused(excinfo).status == 422


# ------------------------------------------------------------------- logging


def test_access_log_has_no_tokens_or_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = open_env(tmp_path / "state", access_log=True)
    try:
        env.register()
        env.admin.put_resource("model-bundle-key", b"TOPSECRETVALUE")
        with caplog.at_level(logging.INFO, logger="pmc2.attestation"):
            result, key_pair = env.attest()
            env.client.resource("model-bundle-key", result.token, key_pair)
        lines = [r.getMessage() for r in caplog.records if r.name == "pmc2.attestation.access"]
        assert any("path=/v1/attest" in line and "status=200" in line for line in lines)
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert result.token not in text and result.token.split(".")[1] not in text
        assert "TOPSECRETVALUE" not in text
        audit = json.dumps(env.admin.audit())
        assert "TOPSECRETVALUE" not in audit and result.token not in audit
    finally:
        close_env(env)


def test_config_requires_an_operator_key(tmp_path: Path) -> None:
    from attestation import MalformedError

    with pytest.raises(MalformedError, match="operator key"):
        ServiceConfig(state_dir=tmp_path, operator_keys=())


def test_insecure_roots_warn(tmp_path: Path) -> None:
    from attestation import InsecureRootsWarning, create_app
    from tests._service_support import roots

    config = ServiceConfig(
        state_dir=tmp_path / "s",
        operator_keys=(ed25519.Ed25519PrivateKey.generate().public_key(),),
        insecure_roots=roots(),
    )
    with pytest.warns(InsecureRootsWarning):
        app = create_app(config)
    app.state.service.close()
