"""The SDK's entry points: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both run the flows of ``client._flow`` (attest first, then seal and send) over httpx;
the transport is injectable (``transport=``) so tests, proxies and recording harnesses
can stand in for the network. A client holds the cached attestation and the pinned keys;
use one per thread (``Client``) or per event loop (``AsyncClient``).

Example (needs a running stack, e.g. ``pmc2 up``)::

    >>> from client import Client, ClientConfig, Expectations, JwksPin
    >>> config = ClientConfig(
    ...     gateway_url="http://127.0.0.1:8400",
    ...     attestation_url="http://127.0.0.1:8401",
    ...     jwks_pin=JwksPin(thumbprints=["<kid of the service's token key>"]),
    ...     expect=Expectations(measurements=["<48-byte hex from pmc2 admin measure>"]),
    ... )  # doctest: +SKIP
    >>> with Client(config) as client:  # doctest: +SKIP
    ...     attestation = client.attest()
    ...     for result in client.classify(["cat.jpg", "dog.png"]):
    ...         print(result.source, result.label_name, result.bytes_sent.jpeg)
    cat.jpg cat 1848
    dog.png dog 1795
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from types import TracebackType
from typing import Any, TypeVar

import httpx

from client._errors import ProtocolError, TransportError
from client._flow import Call, ClientConfig, Core, Flow, Reply
from client._images import ImageInput
from client._results import Classification
from client._trust import Attestation

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")

_SINGLE = (str, bytes, bytearray, memoryview, os.PathLike)


def _images(images: Iterable[ImageInput]) -> list[ImageInput]:
    if isinstance(images, _SINGLE) or not isinstance(images, Iterable):
        raise TypeError("classify() takes a list of images; use classify_one() for one image")
    if type(images).__module__.startswith(("PIL", "numpy")):
        raise TypeError("classify() takes a list of images; use classify_one() for one image")
    return list(images)


def _transport_error(call: Call, exc: httpx.HTTPError) -> TransportError:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "unreachable"
    url = call.request.url.copy_with(query=None)
    return TransportError(f"{call.where} ({url}) {kind}: {type(exc).__name__}: {exc}")


def _too_large(call: Call) -> ProtocolError:
    return ProtocolError(f"{call.where} answered more than {call.limit} bytes")


class Client:
    """The blocking client: ``attest()`` and ``classify(images)``.

    ``config``: a :class:`ClientConfig`; ``transport``: an ``httpx.BaseTransport`` to use
    instead of the network (tests, recording, proxies).
    """

    def __init__(self, config: ClientConfig, *, transport: httpx.BaseTransport | None = None):
        self.config = config
        self._core = Core(config)
        self._http = httpx.Client(
            transport=transport, timeout=config.timeout_s, follow_redirects=False
        )

    # -- plumbing --------------------------------------------------------------------

    def _send(self, call: Call) -> Reply:
        try:
            response = self._http.send(call.request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(call, exc) from None
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > call.limit:
                    raise _too_large(call)
        except httpx.HTTPError as exc:
            raise _transport_error(call, exc) from None
        finally:
            response.close()
        return Reply(response.status_code, response.headers, bytes(body))

    def _run(self, flow: Flow[T]) -> T:
        try:
            call = next(flow)
            while True:
                call = flow.send(self._send(call))
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            flow.close()

    # -- API -------------------------------------------------------------------------

    def attest(self, *, fresh: bool | None = None, force: bool = False) -> Attestation:
        """The verified attestation of an enclave key (cached until shortly before it
        expires). ``fresh``: use (or not) the fresh-nonce mode for this call, overriding
        the configuration; ``force``: ignore the cache. Raises
        :class:`AttestationFailed` or :class:`PolicyMismatch` (trust), or
        :class:`TransportError`, :class:`ProtocolError`, :class:`ServerRefused`."""
        return self._run(self._core.attest_flow(force=force or bool(fresh), fresh=fresh))

    @property
    def attestation(self) -> Attestation | None:
        """The cached attestation, if still valid."""
        return self._core.attestation

    def forget_attestation(self) -> None:
        """Drop the cached attestation; the next call attests again."""
        self._core.forget()

    def classify_one(self, image: ImageInput) -> Classification:
        """Attest (or use the cached attestation), then encode, seal and send ``image``."""
        return self._run(self._core.classify_flow(image, 0))

    def classify(self, images: Iterable[ImageInput]) -> list[Classification]:
        """:meth:`classify_one` for each image, in order (attesting once, before the
        first image is even read). Raises on the first failure."""
        items = _images(images)
        if not items:
            return []
        self._run(self._core.attest_flow())
        return [self._run(self._core.classify_flow(image, i)) for i, image in enumerate(items)]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """The asyncio client: ``await attest()`` and ``await classify(images)``, the latter
    sending up to ``concurrency`` images at a time (after one attestation).

    ``transport``: an ``httpx.AsyncBaseTransport`` to use instead of the network.

    >>> async def main(config: ClientConfig) -> None:
    ...     async with AsyncClient(config) as client:
    ...         results = await client.classify(["cat.jpg", "dog.jpg"], concurrency=2)
    """

    def __init__(self, config: ClientConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self._core = Core(config)
        self._http = httpx.AsyncClient(
            transport=transport, timeout=config.timeout_s, follow_redirects=False
        )
        self._attest_lock = asyncio.Lock()

    async def _send(self, call: Call) -> Reply:
        try:
            response = await self._http.send(call.request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(call, exc) from None
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > call.limit:
                    raise _too_large(call)
        except httpx.HTTPError as exc:
            raise _transport_error(call, exc) from None
        finally:
            await response.aclose()
        return Reply(response.status_code, response.headers, bytes(body))

    async def _run(self, flow: Flow[T]) -> T:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._send(call))
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            flow.close()

    async def attest(self, *, fresh: bool | None = None, force: bool = False) -> Attestation:
        """As :meth:`Client.attest`."""
        async with self._attest_lock:
            flow = self._core.attest_flow(force=force or bool(fresh), fresh=fresh)
            return await self._run(flow)

    @property
    def attestation(self) -> Attestation | None:
        return self._core.attestation

    def forget_attestation(self) -> None:
        self._core.forget()

    async def classify_one(self, image: ImageInput) -> Classification:
        """As :meth:`Client.classify_one`."""
        if self._core.attestation is None:
            await self.attest()
        return await self._run(self._core.classify_flow(image, 0))

    async def classify(
        self, images: Iterable[ImageInput], *, concurrency: int = 4
    ) -> list[Classification]:
        """As :meth:`Client.classify`, with up to ``concurrency`` images in flight; the
        results are in input order."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency is a positive integer")
        items = _images(images)
        if not items:
            return []
        if self._core.attestation is None:
            await self.attest()
        semaphore = asyncio.Semaphore(concurrency)

        async def one(index: int, image: Any) -> Classification:
            async with semaphore:
                return await self._run(self._core.classify_flow(image, index))

        tasks = [asyncio.ensure_future(one(i, image)) for i, image in enumerate(items)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
