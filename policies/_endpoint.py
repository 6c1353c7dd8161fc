"""Network endpoints named in policies: URLs and ``host:port`` pairs, and how they match.

Syntax (strict; anything else is rejected):

- URL: ``scheme://host[:port][path]`` with scheme ``http`` or ``https`` (either case), no
  user-info, no query, no fragment. The path is empty or ``/`` followed by segments of
  RFC 3986 ``pchar`` characters without percent-encoding; empty segments (``//``) and the
  dot segments ``.`` and ``..`` are rejected; one trailing ``/`` is allowed.
- ``host:port``: a host and an explicit port, no scheme and no path.
- host: a DNS name of letter-digit-hyphen labels (at most 63 characters each, 253 in all,
  no trailing dot; ASCII only, so an internationalized name is written as its A-label),
  a dotted-quad IPv4 address, or an IPv6 address in brackets (no zone). Names are
  compared in lowercase; IPv6 addresses in their compressed form.
- port: decimal ``1 .. 65535``; a URL without a port has its scheme's default (80, 443).

Matching (``allow.matches(destination)``), where ``allow`` is an allow-list entry:

- ``allow`` is ``host:port``: the destination's host and (effective) port equal the
  entry's, whatever the destination's scheme and path.
- ``allow`` is a URL: the destination is a URL with the same scheme, host and effective
  port, and the entry's path segments are a prefix of the destination's, compared segment
  by segment (``/v1/infer`` allows ``/v1/infer`` and ``/v1/infer/batch`` but not
  ``/v1/inference``); an entry with an empty path or ``/`` allows every path. A trailing
  ``/`` is not a segment.

A destination that does not parse matches nothing.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from policies._errors import PolicyError

__all__ = ["Endpoint"]

DEFAULT_PORTS = {"http": 80, "https": 443}
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+")
_PORT = re.compile(r"[0-9]{1,5}")


def _parse_host(text: str) -> str:
    if text.startswith("["):
        if not text.endswith("]"):
            raise PolicyError(f"bad IPv6 literal {text!r}")
        inner = text[1:-1]
        if "%" in inner:
            raise PolicyError(f"IPv6 zone identifiers are not allowed: {text!r}")
        try:
            return f"[{ipaddress.IPv6Address(inner).compressed}]"
        except ValueError:
            raise PolicyError(f"bad IPv6 address {text!r}") from None
    if not text.isascii():
        raise PolicyError(f"bad host {text!r}: only ASCII names (use the IDNA A-label)")
    host = text.lower()
    if not host or len(host) > 253:
        raise PolicyError(f"bad host {text!r}")
    labels = host.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise PolicyError(f"bad host {text!r}: expected a DNS name or an IP address")
    if labels[-1].isdigit():
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise PolicyError(f"bad IPv4 address {text!r}") from None
    return host


def _parse_port(text: str) -> int:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise PolicyError(f"bad port {text!r}: expected 1 .. 65535")
    return int(text)


def _split_authority(authority: str) -> tuple[str, str | None]:
    if "@" in authority:
        raise PolicyError("user-info is not allowed in an endpoint")
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise PolicyError(f"bad IPv6 literal in {authority!r}")
        host, rest = authority[: close + 1], authority[close + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise PolicyError(f"bad authority {authority!r}")
        return host, rest[1:]
    if ":" in authority:
        host, port = authority.rsplit(":", 1)
        return host, port
    return authority, None


def _parse_path(text: str) -> tuple[str, ...]:
    if text in ("", "/"):
        return ()
    if not text.startswith("/"):
        raise PolicyError(f"bad path {text!r}")
    segments = text[1:].split("/")
    if segments[-1] == "":
        segments.pop()
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise PolicyError(
                f"bad path {text!r}: empty or percent-encoded segment, or forbidden character"
            )
        if segment in (".", ".."):
            raise PolicyError(f"bad path {text!r}: dot segments are not allowed")
    return tuple(segments)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A URL (``scheme`` set) or a ``host:port`` pair (``scheme`` is ``None``).

    ``path`` holds the URL's path segments (empty for ``host:port`` and for the root).
    ``str()`` gives the canonical form: lowercase scheme and host, the port only when it
    is not the scheme's default, the path without a trailing ``/``.
    """

    scheme: str | None
    host: str
    port: int
    path: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.scheme is not None and self.scheme not in DEFAULT_PORTS:
            raise PolicyError(f"unsupported scheme {self.scheme!r}: expected http or https")
        if _parse_host(self.host) != self.host:
            raise PolicyError(f"host {self.host!r} is not in canonical form")
        if not 1 <= self.port <= 65535:
            raise PolicyError(f"port {self.port} outside 1 .. 65535")
        if self.scheme is None and self.path:
            raise PolicyError("a host:port endpoint has no path")
        if self.path and _parse_path("/" + "/".join(self.path)) != self.path:
            raise PolicyError(f"path {self.path!r} is not in canonical form")

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse a URL or ``host:port`` (see the module docstring)."""
        if "://" in text:
            match = _URL.fullmatch(text)
            if match is None:
                raise PolicyError(f"bad URL {text!r}: query, fragment or syntax")
            scheme = match["scheme"].lower()
            if scheme not in DEFAULT_PORTS:
                raise PolicyError(f"unsupported scheme {scheme!r} in {text!r}")
            host_text, port_text = _split_authority(match["authority"])
            port = DEFAULT_PORTS[scheme] if port_text is None else _parse_port(port_text)
            return cls(scheme, _parse_host(host_text), port, _parse_path(match["path"]))
        if any(ch in text for ch in "/?#"):
            raise PolicyError(f"bad endpoint {text!r}: expected a URL or host:port")
        host_text, port_text = _split_authority(text)
        if port_text is None:
            raise PolicyError(f"bad endpoint {text!r}: host:port needs a port")
        return cls(None, _parse_host(host_text), _parse_port(port_text))

    @property
    def is_url(self) -> bool:
        """Whether this is a URL (rather than a bare ``host:port``)."""
        return self.scheme is not None

    def __str__(self) -> str:
        if self.scheme is None:
            return f"{self.host}:{self.port}"
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        path = "".join("/" + segment for segment in self.path)
        return f"{self.scheme}://{self.host}{port}{path}"

    def matches(self, destination: Endpoint | str) -> bool:
        """Whether this allow-list entry allows ``destination`` (see the module docstring)."""
        if isinstance(destination, str):
            try:
                destination = Endpoint.parse(destination)
            except PolicyError:
                return False
        if destination.host != self.host or destination.port != self.port:
            return False
        if self.scheme is None:
            return True
        return destination.scheme == self.scheme and destination.path[: len(self.path)] == self.path
