"""PMC2 client SDK: attest the enclave, then send it photos (see DESIGN.md, "Data flow").

The client verifies the enclave's attestation-result token (signed by the attestation
service, whose keys it pins) against its own expectations (launch measurement, launch
configuration / HOST_DATA, egress-policy digest, ...), and only then encodes each photo
as a JPEG (4:4:4), seals it with HPKE to the attested enclave key (docs/protocol.md) and
sends it through the untrusted gateway. Nothing leaves the client before attestation
succeeds. Guide: docs/client.md.

    >>> from client import Client, ClientConfig, Expectations, JwksPin
    >>> config = ClientConfig(
    ...     gateway_url="http://127.0.0.1:8400",
    ...     attestation_url="http://127.0.0.1:8401",
    ...     jwks_pin=JwksPin(thumbprints=["7vWJmHRyIZgAhXDXOIJKRpCrqigOo-DLgG-u4PyvgZk"]),
    ...     expect=Expectations(measurements=["a5" * 48]),
    ... )
    >>> with Client(config) as client:          # doctest: +SKIP
    ...     print(client.attest().key_id)
    ...     for result in client.classify(["cat.jpg"]):
    ...         print(result.label_name, result.bytes_sent.jpeg, result.timings.total_ms)

Errors: :class:`ClientError` and its subclasses :class:`AttestationFailed`,
:class:`PolicyMismatch`, :class:`TransportError`, :class:`ProtocolError`,
:class:`ServerRefused`, :class:`InvalidImage`.
"""

from client._client import AsyncClient, Client
from client._errors import (
    AttestationFailed,
    ClientError,
    InvalidImage,
    PolicyMismatch,
    ProtocolError,
    ServerRefused,
    TransportError,
)
from client._flow import ClientConfig
from client._images import (
    DEFAULT_JPEG_QUALITY,
    ImageInput,
    JpegOptions,
    PreparedImage,
    prepare_image,
)
from client._results import BytesSent, Classification, Timings
from client._trust import (
    Attestation,
    Expectations,
    InsecureClientWarning,
    JwksPin,
    jwk_thumbprint,
    select_pinned_keys,
)

__all__: list[str] = [
    "DEFAULT_JPEG_QUALITY",
    "AsyncClient",
    "Attestation",
    "AttestationFailed",
    "BytesSent",
    "Classification",
    "Client",
    "ClientConfig",
    "ClientError",
    "Expectations",
    "ImageInput",
    "InsecureClientWarning",
    "InvalidImage",
    "JpegOptions",
    "JwksPin",
    "PolicyMismatch",
    "PreparedImage",
    "ProtocolError",
    "ServerRefused",
    "Timings",
    "TransportError",
    "jwk_thumbprint",
    "prepare_image",
    "select_pinned_keys",
]
