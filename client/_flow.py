"""The client's protocol logic, written once for the sync and the async client.

Each operation is a generator (a *flow*) that yields the HTTP calls it needs
(:class:`Call`) and receives their answers (:class:`Reply`); :class:`client.Client`
and :class:`client.AsyncClient` only perform the calls. So the order of calls, and in
particular **attest first, then send**, is decided here, in one place.

Attestation (:meth:`Core.attest_flow`), docs/gateway_api.md 2 and
docs/attestation-service.md:

A1. Use the cached attestation while it is valid: until ``refresh_margin_s`` (at most a
    quarter of its lifetime) before the token's ``exp`` by the client's clock.
A2. ``GET {gateway}/v1/attestation``: the replicas' offers (key id, public JWK, token).
    Anything but a well-formed list: :class:`ProtocolError`; a problem document:
    :class:`ServerRefused`.
A3. The attestation service's pinned keys (``_trust.select_pinned_keys``): the pinned
    JWKS, or ``GET {jwks_url}`` filtered by the pin; fetched again once when a token
    names a key id not yet known (the service rotated its key).
A4. Default mode: the first offer (those of the configured suite first) whose token
    passes ``_trust.verify_offer`` (signature, lifetime, binding to the offered key,
    expectations). None: the error of the single offer, or a summary.
A5. Fresh-nonce mode: a fresh 32-byte nonce; ``GET {gateway}/v1/attestation?nonce=N&
    key_id=K`` for an offer K of the configured suite gives evidence (the nonce echoed,
    the key id K); ``POST {attestation}/v1/verify`` with the nonce, K's public key and the
    evidence: the service appraises evidence bound to *this* nonce and key and issues a
    token, which is verified as in A4 and must carry this nonce (``_trust`` N1, N2) and
    bind K.

Classification (:meth:`Core.classify_flow`), docs/protocol.md and docs/gateway_api.md 3:

I1. Attest (A1-A5). Only then is the image read and encoded (JPEG 4:4:4) and sealed
    (HPKE) to the attested key, which is the token's ``cnf`` key, never a key the gateway
    merely names.
I2. ``POST {gateway}/v1/infer`` with the envelope (``application/octet-stream``).
I3. ``421`` (unknown key: the enclave restarted): attest again, ignoring the cache
    (A2-A5), seal again to the newly attested key and retry once. A second 421, or a
    re-attestation giving the same key: :class:`ServerRefused`.
I4. ``200 application/octet-stream``: open the sealed answer (bound to this request,
    carrying the bit-string ``sizes`` if and only if they were asked for, protocol.md
    6.3.1); a failure to open: :class:`ProtocolError`; a sealed failure (``invalid-image``,
    ``upstream-unavailable``, ...): :class:`ServerRefused`; other statuses: the problem
    document as :class:`ServerRefused`, anything else :class:`ProtocolError`.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import secrets
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import httpx

from client._errors import (
    AttestationFailed,
    ClientError,
    InvalidImage,
    PolicyMismatch,
    ProtocolError,
    ServerRefused,
)
from client._images import ImageInput, JpegOptions, prepare_image
from client._results import BytesSent, Classification, Timings
from client._trust import (
    Attestation,
    Expectations,
    JwksPin,
    select_pinned_keys,
    token_kid,
    verify_offer,
)
from sealed import (
    DEFAULT_LIMITS,
    DEFAULT_REQUEST_PADDING,
    DEFAULT_SUITE,
    SUPPORTED_SUITES,
    EnclavePublicKey,
    HpkeSuite,
    InferenceFailure,
    OversizedError,
    RequestOptions,
    SealedError,
    seal_request,
)

__all__ = ["Call", "ClientConfig", "Core", "Flow", "Reply"]

T = TypeVar("T")

JWKS_PATH = "/.well-known/jwks.json"
MAX_LISTING_BYTES = 1024 * 1024
MAX_JSON_BYTES = 256 * 1024
MAX_OFFERS = 64
_KEY_ID = re.compile(r"[0-9a-f]{32}")
_CODE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_USER_AGENT = "pmc2-client/1"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _url(text: str, what: str) -> str:
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ValueError(f"bad {what} URL {text!r}") from None
    if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
        raise ValueError(f"the {what} URL {text!r} must be http(s)://host[:port][/prefix]")
    return str(url).rstrip("/")


@dataclass(frozen=True)
class ClientConfig:
    """Everything a :class:`client.Client` needs.

    ``gateway_url``: the gateway (``GET /v1/attestation``, ``POST /v1/infer``);
    ``attestation_url``: the attestation service (``/v1/verify`` in the fresh-nonce
    mode), whose key set is at ``jwks_url`` (default ``attestation_url`` +
    ``/.well-known/jwks.json``); ``jwks_pin``: which of its keys are trusted
    (:class:`JwksPin`); ``expect``: what an enclave must attest (:class:`Expectations`;
    default: whatever the service's appraisal accepted); ``suite``: the HPKE suite to
    seal with (an enclave key of another suite is refused); ``jpeg``: encoding
    (:class:`JpegOptions`: quality 90, 4:4:4); ``top_k``: labels per answer;
    ``fresh_nonce``: attest with the client's own nonce (``/v1/verify``) instead of
    the cached tokens the gateway publishes; ``api_key``: sent as ``X-API-Key`` to the
    gateway; ``timeout_s``: per HTTP call; ``refresh_margin_s``: re-attest this long
    before the token expires; ``leeway_s``: tolerated clock skew on ``iat``/``exp``;
    ``clock``: the reference time for token checks; ``padding_block``: request
    padding (protocol.md 6.1); ``sizes``: ask the enclave for the bit-string sizes of
    its egress (protocol.md 6.3.1, :class:`BytesSent` ``bitstring*``; an enclave
    older than that member refuses the option, so set it false to talk to one).

    >>> config = ClientConfig(
    ...     gateway_url="http://127.0.0.1:8400", attestation_url="http://127.0.0.1:8401",
    ...     jwks_pin=JwksPin(thumbprints=["7vWJmHRyIZgAhXDXOIJKRpCrqigOo-DLgG-u4PyvgZk"]))
    >>> config.jwks_endpoint, config.jpeg.quality, config.suite.name
    ('http://127.0.0.1:8401/.well-known/jwks.json', 90, 'HPKE-3')
    """

    gateway_url: str
    attestation_url: str
    jwks_pin: JwksPin
    expect: Expectations = field(default_factory=Expectations)
    suite: HpkeSuite = DEFAULT_SUITE
    jpeg: JpegOptions = field(default_factory=JpegOptions)
    top_k: int = 3
    fresh_nonce: bool = False
    jwks_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    refresh_margin_s: float = 30.0
    leeway_s: float = 5.0
    clock: Callable[[], dt.datetime] = field(default=_utcnow, compare=False)
    padding_block: int = DEFAULT_REQUEST_PADDING
    sizes: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "gateway_url", _url(self.gateway_url, "gateway"))
        object.__setattr__(
            self, "attestation_url", _url(self.attestation_url, "attestation service")
        )
        if self.jwks_url is not None:
            object.__setattr__(self, "jwks_url", _url(self.jwks_url, "key set"))
        if not isinstance(self.jwks_pin, JwksPin):
            raise TypeError("jwks_pin is a JwksPin")
        if not isinstance(self.expect, Expectations):
            raise TypeError("expect is an Expectations")
        if self.suite not in SUPPORTED_SUITES:
            raise ValueError(f"unsupported suite {self.suite}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise ValueError("top_k is an integer")
        if not 1 <= self.top_k <= 100:
            raise ValueError("top_k must be in 1..100")
        for name in ("timeout_s", "refresh_margin_s", "leeway_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if not isinstance(self.sizes, bool):
            raise ValueError("sizes is a bool")
        if self.api_key is not None and not re.fullmatch(r"[\x21-\x7e]{16,256}", self.api_key):
            raise ValueError("an API key is 16..256 printable ASCII characters")

    @property
    def jwks_endpoint(self) -> str:
        return self.jwks_url if self.jwks_url is not None else self.attestation_url + JWKS_PATH


@dataclass(frozen=True)
class Call:
    """One HTTP call a flow needs: the request, the most bytes of answer it reads, and
    which server it goes to (for messages)."""

    request: httpx.Request
    limit: int
    where: str


@dataclass(frozen=True)
class Reply:
    """The answer to a :class:`Call` (body read completely, within the limit)."""

    status: int
    headers: httpx.Headers
    content: bytes

    @property
    def media_type(self) -> str:
        value = str(self.headers.get("content-type", ""))
        return value.split(";", 1)[0].strip().lower()


Flow: TypeAlias = Generator[Call, Reply, T]


@dataclass(frozen=True)
class _Offer:
    key_id: str
    public_key: EnclavePublicKey
    token: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def _retry_after(reply: Reply) -> int | None:
    value = reply.headers.get("retry-after", "")
    return int(value) if value.isdigit() and len(value) < 8 else None


def _printable(text: object, limit: int = 300) -> str:
    clean = "".join(c if " " <= c <= "~" else "?" for c in str(text))
    return clean[:limit]


def refusal(reply: Reply, where: str) -> ClientError:
    """The error an unsuccessful answer stands for: its problem document as
    :class:`ServerRefused`, or :class:`ProtocolError` when it is not one."""
    problem: Any = None
    if reply.media_type in ("application/problem+json", "application/json"):
        try:
            problem = httpx.Response(200, content=reply.content).json()
        except ValueError:
            problem = None
    if not isinstance(problem, dict) or not isinstance(problem.get("type", ""), str):
        return ProtocolError(
            f"{where} answered HTTP {reply.status} ({reply.media_type or 'no content type'}) "
            "without a problem document"
        )
    kind = str(problem.get("type", "about:blank")).rsplit(":", 1)[-1]
    code = kind if _CODE.fullmatch(kind) else "unknown"
    detail = _printable(problem.get("detail") or problem.get("title") or "")
    return ServerRefused(
        where, reply.status, code, detail, retry_after=_retry_after(reply), problem=problem
    )


def _json(reply: Reply, where: str) -> dict[str, Any]:
    if reply.status != 200:
        raise refusal(reply, where)
    media = reply.media_type
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise ProtocolError(
            f"{where} answered {reply.media_type or 'no content type'}, expected application/json"
        )
    try:
        doc = httpx.Response(200, content=reply.content).json()
    except ValueError:
        raise ProtocolError(f"{where} answered with malformed JSON") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{where} answered with JSON that is not an object")
    return doc


def _parse_offers(doc: Mapping[str, Any]) -> list[_Offer]:
    """A2: the gateway's offers (docs/gateway_api.md 2.1)."""
    where = "the gateway's attestation list"
    entries = doc.get("attestations")
    if not isinstance(entries, list):
        raise ProtocolError(f"{where} has no 'attestations' array")
    if not entries:
        raise ProtocolError(f"{where} is empty (the gateway should answer 503 instead)")
    if len(entries) > MAX_OFFERS:
        raise ProtocolError(f"{where} has more than {MAX_OFFERS} entries")
    offers = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ProtocolError(f"{where}: entry {index} is not an object")
        key_id, token, jwk = entry.get("key_id"), entry.get("token"), entry.get("public_key_jwk")
        if not isinstance(key_id, str) or _KEY_ID.fullmatch(key_id) is None:
            raise ProtocolError(f"{where}: entry {index} has no key id of 32 hex digits")
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
            raise ProtocolError(f"{where}: entry {index} has no compact JWS token")
        if not isinstance(jwk, dict):
            raise ProtocolError(f"{where}: entry {index} has no public_key_jwk object")
        try:
            key = EnclavePublicKey.from_jwk(jwk)
        except SealedError as exc:
            raise ProtocolError(f"{where}: entry {index}'s public key: {exc}") from None
        offers.append(_Offer(key_id, key, token))
    return offers


class Core:
    """State shared by the calls of one client: the configuration, the pinned keys and
    the cached attestation. Not thread-safe (one per client)."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._keys: dict[str, Any] | None = None
        if not config.jwks_pin.fetches:
            assert config.jwks_pin.key_set is not None
            self._keys = select_pinned_keys(
                config.jwks_pin.key_set, config.jwks_pin, where="the pinned key set"
            )
        self._attestation: Attestation | None = None
        self._request_prefix = secrets.token_hex(4)
        self._requests = 0

    # -- helpers ---------------------------------------------------------------------

    def _gateway_headers(self, **extra: str) -> dict[str, str]:
        headers = {"User-Agent": _USER_AGENT, **extra}
        if self.config.api_key is not None:
            headers["X-API-Key"] = self.config.api_key
        return headers

    def _gateway(self, method: str, path: str, limit: int, **kwargs: Any) -> Call:
        headers = self._gateway_headers(**kwargs.pop("headers", {}))
        request = httpx.Request(method, self.config.gateway_url + path, headers=headers, **kwargs)
        return Call(request, limit, "the gateway")

    def _valid(self, attestation: Attestation) -> bool:
        now = self.config.clock()
        lifetime = (attestation.expires_at - attestation.issued_at).total_seconds()
        margin = min(self.config.refresh_margin_s, lifetime / 4)
        return now < attestation.expires_at - dt.timedelta(seconds=margin)

    @property
    def attestation(self) -> Attestation | None:
        """The cached attestation, if any and still valid."""
        current = self._attestation
        return current if current is not None and self._valid(current) else None

    def forget(self) -> None:
        """Drop the cached attestation (the next call attests again)."""
        self._attestation = None

    # -- attestation -----------------------------------------------------------------

    def attest_flow(
        self, *, force: bool = False, fresh: bool | None = None, stale_key_id: str | None = None
    ) -> Flow[Attestation]:
        """A1-A5 (the module docstring)."""
        current = self.attestation
        # A1
        if current is not None and (
            not force or (stale_key_id is not None and current.key_id != stale_key_id)
        ):
            return current
        fresh = self.config.fresh_nonce if fresh is None else fresh
        # A2
        reply = yield self._gateway(
            "GET", "/v1/attestation", MAX_LISTING_BYTES, headers={"Accept": "application/json"}
        )
        offers = _parse_offers(_json(reply, "the gateway"))
        wanted = self.config.suite
        offers.sort(key=lambda offer: offer.public_key.suite != wanted)
        if fresh:
            attestation = yield from self._fresh_flow(offers)
        else:
            attestation = yield from self._offers_flow(offers)
        self._attestation = attestation
        return attestation

    def _keys_flow(self, tokens: list[str]) -> Flow[dict[str, Any]]:
        """A3: the pinned keys, fetched (again) when a token names an unknown key."""
        pin = self.config.jwks_pin
        if not pin.fetches:
            assert self._keys is not None
            return self._keys
        known = {k["kid"] for k in self._keys["keys"]} if self._keys is not None else set()
        needed = {kid for kid in map(token_kid, tokens) if kid is not None}
        if self._keys is not None and needed <= known:
            return self._keys
        url = self.config.jwks_endpoint
        request = httpx.Request(
            "GET", url, headers={"User-Agent": _USER_AGENT, "Accept": "application/json"}
        )
        reply = yield Call(request, MAX_JSON_BYTES, "the attestation service")
        doc = _json(reply, "the attestation service's key set")
        self._keys = select_pinned_keys(doc, pin, where=f"the key set at {url}")
        return self._keys

    def _verify(self, offer: _Offer, keys: Mapping[str, Any], nonce: bytes | None) -> Attestation:
        config = self.config
        kid = token_kid(offer.token)
        kids = sorted(str(k.get("kid")) for k in keys.get("keys", ()))
        if kid not in kids:
            raise AttestationFailed(
                f"the token is signed by key {_printable(kid, 64)}, which is not a pinned key "
                f"of the attestation service (usable: {', '.join(kids)})"
            )
        return verify_offer(
            offer.token,
            keys,
            offered_key=offer.public_key,
            offered_key_id=offer.key_id,
            at=config.clock(),
            expect=config.expect,
            suite=config.suite,
            nonce=nonce,
            leeway=config.leeway_s,
        )

    def _offers_flow(self, offers: list[_Offer]) -> Flow[Attestation]:
        """A4."""
        keys = yield from self._keys_flow([offer.token for offer in offers])
        errors: list[ClientError] = []
        for offer in offers:
            try:
                return self._verify(offer, keys, None)
            except (AttestationFailed, PolicyMismatch) as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        reasons = [f"key {o.key_id}: {e}" for o, e in zip(offers, errors, strict=True)]
        mismatches = [e for e in errors if isinstance(e, PolicyMismatch)]
        if mismatches:
            raise mismatches[0]
        raise AttestationFailed(
            f"none of the {len(offers)} attestations the gateway offered verifies: "
            + "; ".join(reasons),
            reasons,
        )

    def _fresh_flow(self, offers: list[_Offer]) -> Flow[Attestation]:
        """A5."""
        wanted = self.config.suite
        offer = offers[0]
        if offer.public_key.suite != wanted:
            raise PolicyMismatch(
                "HPKE suite",
                expected=[wanted.name],
                found=", ".join(sorted({o.public_key.suite.name for o in offers})),
                hint="no replica offers a key of the configured suite",
            )
        nonce = os.urandom(32)
        encoded = _b64url(nonce)
        reply = yield self._gateway(
            "GET",
            "/v1/attestation",
            MAX_LISTING_BYTES,
            params={"nonce": encoded, "key_id": offer.key_id},
            headers={"Accept": "application/json"},
        )
        doc = _json(reply, "the gateway")
        evidence = doc.get("evidence")
        if doc.get("nonce") != encoded or not isinstance(evidence, dict):
            raise ProtocolError("the gateway's evidence does not echo this client's nonce")
        if doc.get("key_id") != offer.key_id:
            raise ProtocolError(
                f"the gateway answered evidence for key {_printable(doc.get('key_id'), 64)}, "
                f"not the requested {offer.key_id}"
            )
        body = {"nonce": encoded, "public_key": offer.public_key.to_jwk(), "evidence": evidence}
        request = httpx.Request(
            "POST",
            self.config.attestation_url + "/v1/verify",
            json=body,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
        )
        reply = yield Call(request, MAX_JSON_BYTES, "the attestation service")
        if 400 <= reply.status < 500:
            refused = refusal(reply, "the attestation service")
            reasons: list[str] = []
            if isinstance(refused, ServerRefused):
                raw = refused.problem.get("failures")
                reasons = [_printable(f) for f in raw] if isinstance(raw, list) else []
            raise AttestationFailed(
                f"the attestation service did not verify the evidence for key {offer.key_id} "
                f"and this client's nonce: {refused}",
                reasons,
            )
        answer = _json(reply, "the attestation service")
        token = answer.get("token")
        if not isinstance(token, str):
            raise ProtocolError("the attestation service's verification carries no token")
        fresh_offer = _Offer(offer.key_id, offer.public_key, token)
        keys = yield from self._keys_flow([token])
        return self._verify(fresh_offer, keys, nonce)

    # -- classification --------------------------------------------------------------

    def _request_id(self) -> str:
        self._requests += 1
        return f"{self._request_prefix}-{self._requests}"

    def classify_flow(self, image: ImageInput, index: int = 0) -> Flow[Classification]:
        """I1-I4 (the module docstring)."""
        config = self.config
        # I1
        attestation = yield from self.attest_flow()
        start = time.perf_counter()
        prepared = prepare_image(image, config.jpeg, index=index)
        jpeg_ms = _ms(start)
        reattest_ms = 0.0
        for attempt in range(2):
            request_id = self._request_id()
            start = time.perf_counter()
            try:
                sealed = seal_request(
                    attestation.public_key,
                    prepared.jpeg,
                    RequestOptions(top_k=config.top_k, request_id=request_id, sizes=config.sizes),
                    padding_block=config.padding_block,
                )
            except OversizedError as exc:
                raise InvalidImage(f"{prepared.source}: too large to send ({exc})") from None
            seal_ms = _ms(start)
            # I2
            start = time.perf_counter()
            reply = yield self._gateway(
                "POST",
                "/v1/infer",
                DEFAULT_LIMITS.max_response_bytes,
                content=sealed.envelope,
                headers={"Content-Type": "application/octet-stream"},
            )
            round_trip_ms = _ms(start)
            # I3
            if reply.status == 421:
                refused = refusal(reply, "the gateway")
                if attempt == 1:
                    raise refused
                start = time.perf_counter()
                attestation = yield from self.attest_flow(
                    force=True, stale_key_id=attestation.key_id
                )
                reattest_ms += _ms(start)
                if attestation.key_id == sealed.key_id.hex:
                    raise ServerRefused(
                        "the gateway",
                        421,
                        "unknown-key",
                        f"the gateway refuses key {sealed.key_id.hex}, and it is still the only "
                        "attested key it offers",
                    )
                continue
            # I4
            if reply.status != 200:
                raise refusal(reply, "the gateway")
            if reply.media_type != "application/octet-stream":
                raise ProtocolError(
                    f"the gateway answered {reply.media_type or 'no content type'}, "
                    "expected a sealed answer (application/octet-stream)"
                )
            start = time.perf_counter()
            try:
                answer = sealed.open_response(reply.content)
            except SealedError as exc:
                raise ProtocolError(
                    f"the sealed answer does not open ({exc.code}): {exc}"
                ) from None
            open_ms = _ms(start)
            if isinstance(answer, InferenceFailure):
                raise ServerRefused("the enclave", 200, answer.code, answer.message)
            sizes = answer.sizes  # present iff asked (sealed.open_response checks it)
            return Classification(
                source=prepared.source,
                label=answer.label,
                label_name=answer.label_name,
                scores=answer.top_k,
                bytes_sent=BytesSent(
                    jpeg=len(prepared.jpeg),
                    envelope=len(sealed.envelope),
                    response=len(reply.content),
                    reencoded=prepared.reencoded,
                    bitstring=None if sizes is None else sizes.bitstring_bytes,
                    bitstring_batch=None if sizes is None else sizes.batch_bitstring_bytes,
                    batch_images=None if sizes is None else sizes.batch_images,
                ),
                timings=Timings(
                    jpeg_ms=jpeg_ms,
                    seal_ms=seal_ms,
                    round_trip_ms=round_trip_ms,
                    open_ms=open_ms,
                    server_ms={name: us / 1000.0 for name, us in answer.timings_us},
                    reattest_ms=reattest_ms,
                ),
                key_id=sealed.key_id.hex,
                request_id=request_id,
                size=prepared.size,
            )
        raise AssertionError("unreachable")  # pragma: no cover
