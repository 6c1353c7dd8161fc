"""Model bundles: one safetensors file per network plus a digest-carrying manifest.

A bundle is a directory::

    manifest.json            the manifest (below)
    <role>.safetensors       one file per network, role in target, aux, generator, codec

``manifest.json`` (format ``pmc2-vision-bundle/v1``) is a JSON object with exactly:

* ``format``: the string ``"pmc2-vision-bundle/v1"``;
* ``networks``: an object keyed by role; each value has exactly ``arch`` (registry name),
  ``config`` (the keyword arguments that rebuild the network), ``file``
  (``<role>.safetensors``), ``dtype`` (storage dtype of floating tensors: ``float32``,
  ``float16`` or ``bfloat16``; integer buffers keep theirs), ``sha256`` (lowercase hex of
  the file), ``bytes`` (the file's size) and ``parameters`` (number of parameters);
* ``commands``: the exact training commands, in order (array of strings);
* ``metrics``: any JSON object (figures reached, timings, notes).

**Digest.** :func:`manifest_digest` is SHA-384 over the manifest's canonical JSON: the
parsed value re-serialised with object members sorted by key, no whitespace, ASCII only
(``\\uXXXX`` escapes), integers in decimal and floats in Python's shortest round-trip
form; NaN and infinities are not allowed. Because the manifest carries every file's
sha256, this one digest pins every weight of the bundle; the enclave's launch
configuration pins it, and :func:`load_bundle` checks it when given ``expected_digest``.

**Loading** (:func:`load_bundle`) checks, for each requested role, before building or
loading anything from that file:

1. the manifest parses strictly (known format, exactly the keys above, no duplicate
   keys, file named after its role, total size at most :data:`MAX_BUNDLE_BYTES`), and,
   when ``expected_digest`` is given, its digest matches (constant-time comparison);
2. the file exists, is a regular file, and its size equals the manifest's ``bytes``;
3. SHA-256 of the bytes read matches the manifest (constant-time comparison); the same
   bytes are then parsed (safetensors, no pickle), so what was hashed is what is loaded;
4. the network is rebuilt from ``(arch, config)`` through the registry; an unknown
   architecture or bad config is a :class:`BundleError`;
5. every tensor name, shape and dtype matches the rebuilt network exactly (strict
   load), floating tensors in the declared storage dtype.

**Codec coding tables.** The codec's entropy-bottleneck buffers (``_quantized_cdf``,
``_offset``, ``_cdf_length``, built by ``update()``) are stored in its file and loaded
as they are; ``update()`` is *not* called after loading. Enclave and cloud therefore code
with bit-identical tables taken from the same file, independent of floating-point
differences between machines. :func:`write_bundle` refuses a codec whose tables are
missing or differ from what ``update(force=True)`` computes from its weights (stale
tables), and :func:`load_bundle` checks the tables' structure.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import math
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vision._errors import BundleError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "BUNDLE_FORMAT",
    "DEFAULT_BUNDLE_BUDGET",
    "DEFAULT_BUNDLE_DIR",
    "MANIFEST_NAME",
    "MAX_BUNDLE_BYTES",
    "ROLES",
    "Bundle",
    "BundleManifest",
    "NetworkEntry",
    "NetworkSpec",
    "describe_network",
    "load_bundle",
    "manifest_digest",
    "read_manifest",
    "write_bundle",
]

BUNDLE_FORMAT = "pmc2-vision-bundle/v1"
MANIFEST_NAME = "manifest.json"
MAX_BUNDLE_BYTES = 256_000_000
"""The format's limit on the weights of a bundle, all files together: room for the
paper's full-size pairs (VGG13_bn or ResNet18 target, U-Net base 32, the codec and the
auxiliary classifier come to about 130 MB), and a bound on what a loader reads."""
DEFAULT_BUNDLE_BUDGET = 40_000_000
"""The committed default bundle (``vision/bundle/``) stays within 40 MB."""
ROLES: tuple[str, ...] = ("target", "aux", "generator", "codec")
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "bundle"
"""The committed default bundle (package data)."""

CODEC_ARCH = "factorized_prior"
_STORAGE_DTYPES = ("float32", "float16", "bfloat16")
_MAX_MANIFEST_BYTES = 1 << 20
_MAX_JSON_DEPTH = 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENTRY_KEYS = frozenset({"arch", "config", "file", "dtype", "sha256", "bytes", "parameters"})
_MANIFEST_KEYS = frozenset({"format", "networks", "commands", "metrics"})
_EB_TABLES = ("_quantized_cdf", "_offset", "_cdf_length")

Builder = Callable[[str, str, Mapping[str, Any]], "nn.Module"]
"""``builder(role, arch, config)`` returns a freshly built (untrained) network."""


# --- JSON helpers -------------------------------------------------------------------


def _frozen(value: Any) -> Any:
    """A read-only deep copy of a JSON value (objects become mapping proxies)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thawed(v) for v in value]
    return value


def _check_json(value: Any, where: str, depth: int = 0) -> None:
    if depth > _MAX_JSON_DEPTH:
        raise BundleError(f"{where}: nested too deeply")
    if value is None or isinstance(value, bool | str | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BundleError(f"{where}: non-finite number")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BundleError(f"{where}: object key {key!r} is not a string")
            _check_json(item, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)
        return
    raise BundleError(f"{where}: {type(value).__name__} is not a JSON value")


def _canonical_json(value: Any) -> bytes:
    return json.dumps(
        _thawed(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BundleError(f"manifest: duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise BundleError(f"manifest: {name} is not allowed")


# --- manifest model -----------------------------------------------------------------


@dataclass(frozen=True)
class NetworkEntry:
    """One network of a bundle, as the manifest describes it."""

    role: str
    arch: str
    config: Mapping[str, Any]
    file: str
    dtype: str
    sha256: str
    bytes: int
    parameters: int

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise BundleError(f"unknown network role {self.role!r} (roles: {', '.join(ROLES)})")
        if not isinstance(self.arch, str) or not self.arch:
            raise BundleError(f"{self.role}: arch must be a non-empty string")
        if not isinstance(self.config, Mapping):
            raise BundleError(f"{self.role}: config must be an object")
        _check_json(self.config, f"networks.{self.role}.config")
        object.__setattr__(self, "config", _frozen(self.config))
        if self.file != f"{self.role}.safetensors":
            raise BundleError(f"{self.role}: file must be {self.role}.safetensors")
        if self.dtype not in _STORAGE_DTYPES:
            raise BundleError(f"{self.role}: dtype must be one of {', '.join(_STORAGE_DTYPES)}")
        if not isinstance(self.sha256, str) or not _HEX64.fullmatch(self.sha256):
            raise BundleError(f"{self.role}: sha256 must be 64 lowercase hex digits")
        for name in ("bytes", "parameters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BundleError(f"{self.role}: {name} must be a non-negative integer")

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON object for this network."""
        return {
            "arch": self.arch,
            "config": _thawed(self.config),
            "file": self.file,
            "dtype": self.dtype,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "parameters": self.parameters,
        }

    @classmethod
    def from_dict(cls, role: str, value: Any) -> NetworkEntry:
        """Parse one ``networks`` member strictly."""
        if not isinstance(value, Mapping):
            raise BundleError(f"networks.{role} must be an object")
        keys = set(value)
        if keys != _ENTRY_KEYS:
            missing, extra = sorted(_ENTRY_KEYS - keys), sorted(keys - _ENTRY_KEYS)
            raise BundleError(f"networks.{role}: missing keys {missing}, unknown keys {extra}")
        return cls(role=role, **{k: value[k] for k in _ENTRY_KEYS})


@dataclass(frozen=True)
class BundleManifest:
    """The parsed ``manifest.json`` of a bundle."""

    networks: Mapping[str, NetworkEntry]
    commands: tuple[str, ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.networks:
            raise BundleError("a bundle holds at least one network")
        for role, entry in self.networks.items():
            if not isinstance(entry, NetworkEntry) or entry.role != role:
                raise BundleError(f"networks.{role}: entry/role mismatch")
        object.__setattr__(self, "networks", MappingProxyType(dict(self.networks)))
        commands = tuple(self.commands)
        if not all(isinstance(c, str) for c in commands):
            raise BundleError("commands must be strings")
        object.__setattr__(self, "commands", commands)
        if not isinstance(self.metrics, Mapping):
            raise BundleError("metrics must be an object")
        _check_json(self.metrics, "metrics")
        object.__setattr__(self, "metrics", _frozen(self.metrics))
        total = sum(e.bytes for e in self.networks.values())
        if total > MAX_BUNDLE_BYTES:
            raise BundleError(f"bundle of {total} bytes exceeds {MAX_BUNDLE_BYTES} bytes")

    @property
    def total_bytes(self) -> int:
        """Bytes of all network files together."""
        return sum(e.bytes for e in self.networks.values())

    def to_dict(self) -> dict[str, Any]:
        """The manifest as a JSON value."""
        return {
            "format": BUNDLE_FORMAT,
            "networks": {role: self.networks[role].to_dict() for role in sorted(self.networks)},
            "commands": list(self.commands),
            "metrics": _thawed(self.metrics),
        }

    def canonical_bytes(self) -> bytes:
        """The canonical JSON the digest is computed over."""
        return _canonical_json(self.to_dict())

    def digest(self) -> str:
        """SHA-384 of :meth:`canonical_bytes`, lowercase hex."""
        return hashlib.sha384(self.canonical_bytes()).hexdigest()

    def to_json(self) -> bytes:
        """The file form: sorted keys, two-space indentation, ASCII, trailing newline."""
        text = json.dumps(
            self.to_dict(), sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False
        )
        return (text + "\n").encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> BundleManifest:
        """Parse ``manifest.json`` strictly."""
        if len(data) > _MAX_MANIFEST_BYTES:
            raise BundleError("manifest too large")
        try:
            value = json.loads(
                data.decode("utf-8"),
                object_pairs_hook=_no_duplicates,
                parse_constant=_reject_constant,
            )
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BundleError(f"manifest is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BundleError("manifest must be a JSON object")
        keys = set(value)
        if keys != _MANIFEST_KEYS:
            missing, extra = sorted(_MANIFEST_KEYS - keys), sorted(keys - _MANIFEST_KEYS)
            raise BundleError(f"manifest: missing keys {missing}, unknown keys {extra}")
        if value["format"] != BUNDLE_FORMAT:
            raise BundleError(f"unsupported bundle format {value['format']!r}")
        networks = value["networks"]
        if not isinstance(networks, dict):
            raise BundleError("networks must be an object")
        commands = value["commands"]
        if not isinstance(commands, list):
            raise BundleError("commands must be an array of strings")
        entries = {role: NetworkEntry.from_dict(role, v) for role, v in networks.items()}
        return cls(networks=entries, commands=tuple(commands), metrics=value["metrics"])


# --- registry -----------------------------------------------------------------------


def _default_builder(role: str, arch: str, config: Mapping[str, Any]) -> nn.Module:
    if role == "codec":
        if arch != CODEC_ARCH:
            raise ValueError(f"unknown codec architecture {arch!r}")
        from vision._codec import make_codec

        if set(config) - {"N", "M"}:
            raise ValueError(f"unknown codec config keys {sorted(set(config) - {'N', 'M'})}")
        codec: nn.Module = make_codec(**dict(config))
        return codec
    from vision import _models

    if role == "generator":
        return _models.build_generator(arch, config)
    return _models.build_classifier(arch, config)


@dataclass(frozen=True)
class NetworkSpec:
    """A network to write with its registry name and config (see :func:`describe_network`)."""

    module: nn.Module
    arch: str
    config: Mapping[str, Any]
    dtype: str = "float32"


def describe_network(module: nn.Module, dtype: str = "float32") -> NetworkSpec:
    """Derive ``(arch, config)``: a CompressAI ``FactorizedPrior`` is
    ``factorized_prior {N, M}``; other networks provide an ``arch`` attribute and a
    ``config()`` method (as :mod:`vision._models` networks do)."""
    eb = getattr(module, "entropy_bottleneck", None)
    n, m = getattr(module, "N", None), getattr(module, "M", None)
    if eb is not None and isinstance(n, int) and isinstance(m, int):
        return NetworkSpec(module, CODEC_ARCH, {"N": n, "M": m}, dtype)
    arch = getattr(module, "arch", None)
    config = getattr(module, "config", None)
    if not isinstance(arch, str) or not arch or not callable(config):
        raise BundleError(
            f"cannot describe {type(module).__name__}: give a NetworkSpec with arch and config"
        )
    return NetworkSpec(module, arch, dict(config()), dtype)


# --- writing ------------------------------------------------------------------------


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    dtype: torch.dtype = getattr(torch, name)
    return dtype


def _check_codec_tables(module: nn.Module) -> None:
    eb: Any = module.entropy_bottleneck
    if any(getattr(eb, name).numel() == 0 for name in _EB_TABLES):
        raise BundleError("codec entropy tables missing: call codec.update() before writing")
    import torch

    fresh: Any = copy.deepcopy(eb)
    fresh.update(force=True)
    for name in _EB_TABLES:
        if not torch.equal(getattr(fresh, name).cpu(), getattr(eb, name).cpu()):
            raise BundleError(
                f"codec entropy table {name} is stale: call codec.update(force=True) before writing"
            )


def _state_tensors(spec: NetworkSpec) -> dict[str, torch.Tensor]:
    storage = _torch_dtype(spec.dtype)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in spec.module.state_dict().items():
        t = tensor.detach().cpu()
        if t.is_floating_point():
            t = t.to(storage)
        tensors[name] = t.contiguous().clone()
    return tensors


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_bundle(
    directory: Path,
    networks: Mapping[str, nn.Module | NetworkSpec],
    *,
    commands: Iterable[str] = (),
    metrics: Mapping[str, Any] | None = None,
    dtype: str = "float32",
) -> BundleManifest:
    """Write ``networks`` (role → module or :class:`NetworkSpec`) as a bundle in ``directory``.

    Floating tensors are stored as ``dtype`` unless a :class:`NetworkSpec` says otherwise.
    Files of roles not written are removed, so the directory holds exactly the bundle.
    The manifest is written last. Returns the manifest.
    """
    from safetensors.torch import save

    if dtype not in _STORAGE_DTYPES:
        raise BundleError(f"dtype must be one of {', '.join(_STORAGE_DTYPES)}")
    unknown = sorted(set(networks) - set(ROLES))
    if unknown:
        raise BundleError(f"unknown network roles {unknown} (roles: {', '.join(ROLES)})")
    if not networks:
        raise BundleError("a bundle holds at least one network")
    specs = {
        role: value if isinstance(value, NetworkSpec) else describe_network(value, dtype)
        for role, value in networks.items()
    }
    blobs: dict[str, bytes] = {}
    entries: dict[str, NetworkEntry] = {}
    for role, spec in specs.items():
        if spec.dtype not in _STORAGE_DTYPES:
            raise BundleError(f"{role}: dtype must be one of {', '.join(_STORAGE_DTYPES)}")
        if role == "codec" or spec.arch == CODEC_ARCH:
            if role != "codec" or spec.arch != CODEC_ARCH:
                raise BundleError(f"the codec role takes a {CODEC_ARCH} network")
            _check_codec_tables(spec.module)
        blob = save(_state_tensors(spec))  # no metadata: its key order is not deterministic
        blobs[role] = blob
        entries[role] = NetworkEntry(
            role=role,
            arch=spec.arch,
            config=spec.config,
            file=f"{role}.safetensors",
            dtype=spec.dtype,
            sha256=hashlib.sha256(blob).hexdigest(),
            bytes=len(blob),
            parameters=sum(p.numel() for p in spec.module.parameters()),
        )
    manifest = BundleManifest(
        networks=entries, commands=tuple(commands), metrics=dict(metrics or {})
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for role in ROLES:
        stale = directory / f"{role}.safetensors"
        if role not in blobs and stale.exists():
            stale.unlink()
    for role, blob in blobs.items():
        _atomic_write(directory / f"{role}.safetensors", blob)
    _atomic_write(directory / MANIFEST_NAME, manifest.to_json())
    return manifest


# --- reading ------------------------------------------------------------------------


def _read_regular(path: Path, limit: int, what: str) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BundleError(f"{what} missing: {path.name}") from None
    except OSError as exc:
        raise BundleError(f"{what} unreadable: {path.name}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{what} is not a regular file: {path.name}")
    if info.st_size > limit:
        raise BundleError(f"{what} too large: {path.name}")
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{what} too large: {path.name}")
    return data


def read_manifest(directory: Path = DEFAULT_BUNDLE_DIR) -> BundleManifest:
    """Read and strictly parse ``directory/manifest.json`` (no weights are read)."""
    data = _read_regular(Path(directory) / MANIFEST_NAME, _MAX_MANIFEST_BYTES, "manifest")
    return BundleManifest.from_bytes(data)


def manifest_digest(source: Path | BundleManifest = DEFAULT_BUNDLE_DIR) -> str:
    """SHA-384 (lowercase hex) of a bundle manifest's canonical JSON.

    ``source`` is a manifest or a bundle directory.
    """
    manifest = source if isinstance(source, BundleManifest) else read_manifest(source)
    return manifest.digest()


def _check_tables(module: nn.Module) -> None:
    eb: Any = module.entropy_bottleneck
    cdf, lengths, offsets = eb._quantized_cdf, eb._cdf_length, eb._offset
    channels = int(eb.channels)
    if cdf.dim() != 2 or cdf.size(0) != channels:
        raise BundleError("codec: CDF table shape does not match the latent channels")
    if lengths.shape != (channels,) or offsets.shape != (channels,):
        raise BundleError("codec: CDF lengths/offsets do not match the latent channels")
    for row, length in zip(cdf.tolist(), lengths.tolist(), strict=True):
        if not 3 <= length <= len(row):
            raise BundleError("codec: CDF length out of range")
        used = row[:length]
        if used[0] != 0 or used[-1] != 1 << 16:
            raise BundleError("codec: CDF does not span [0, 2**16]")
        if any(b <= a for a, b in itertools.pairwise(used)):
            raise BundleError("codec: CDF is not strictly increasing")


def _load_network(
    directory: Path, entry: NetworkEntry, builder: Builder, device: str | torch.device
) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = _read_regular(directory / entry.file, MAX_BUNDLE_BYTES, f"{entry.role} weights")
    if len(data) != entry.bytes:
        raise BundleError(f"{entry.role}: file size {len(data)} differs from the manifest")
    actual = hashlib.sha256(data).digest()
    if not hmac.compare_digest(actual, bytes.fromhex(entry.sha256)):
        raise BundleError(f"{entry.role}: sha256 mismatch for {entry.file}")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{entry.role}: not a valid safetensors file: {exc}") from None
    try:
        module = builder(entry.role, entry.arch, entry.config)
    except (ValueError, TypeError, KeyError) as exc:
        raise BundleError(f"{entry.role}: cannot build {entry.arch!r}: {exc}") from None
    expected = module.state_dict()
    if set(tensors) != set(expected):
        missing = sorted(set(expected) - set(tensors))[:5]
        extra = sorted(set(tensors) - set(expected))[:5]
        raise BundleError(f"{entry.role}: tensor names differ (missing {missing}, unknown {extra})")
    storage = _torch_dtype(entry.dtype)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        reference = expected[name]
        resizable = name.rsplit(".", 1)[-1] in _EB_TABLES and entry.role == "codec"
        if not resizable and tensor.shape != reference.shape:
            got, want = tuple(tensor.shape), tuple(reference.shape)
            raise BundleError(f"{entry.role}: {name} has shape {got}, expected {want}")
        if reference.is_floating_point():
            if tensor.dtype != storage:
                raise BundleError(f"{entry.role}: {name} is {tensor.dtype}, expected {storage}")
            state[name] = tensor.to(reference.dtype)
        elif tensor.dtype != reference.dtype:
            raise BundleError(f"{entry.role}: {name} is {tensor.dtype}, expected {reference.dtype}")
        else:
            state[name] = tensor
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{entry.role}: weights do not fit {entry.arch!r}: {exc}") from None
    if entry.role == "codec":
        _check_tables(module)
    return module.to(device).eval()


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its manifest and the networks that were asked for (in eval mode)."""

    directory: Path
    manifest: BundleManifest
    networks: Mapping[str, nn.Module]

    def __getitem__(self, role: str) -> nn.Module:
        try:
            return self.networks[role]
        except KeyError:
            raise BundleError(f"network {role!r} was not loaded from this bundle") from None

    @property
    def digest(self) -> str:
        """The manifest digest (see :func:`manifest_digest`)."""
        return self.manifest.digest()

    @property
    def target(self) -> nn.Module:
        """The target classifier."""
        return self["target"]

    @property
    def aux(self) -> nn.Module:
        """The auxiliary classifier used to train the generator."""
        return self["aux"]

    @property
    def generator(self) -> nn.Module:
        """The perturbation generator."""
        return self["generator"]

    @property
    def codec(self) -> Any:
        """The neural codec (a CompressAI ``FactorizedPrior`` with its coding tables)."""
        return self["codec"]


def load_bundle(
    directory: Path = DEFAULT_BUNDLE_DIR,
    roles: Iterable[str] | None = None,
    *,
    expected_digest: str | None = None,
    device: str | torch.device = "cpu",
    builder: Builder | None = None,
) -> Bundle:
    """Load the networks ``roles`` (default: all in the manifest) from a bundle.

    Every requested file's digest is verified before it is parsed; with
    ``expected_digest`` (hex SHA-384 of the canonical manifest) the manifest itself is
    pinned. Raises :class:`BundleError` on any mismatch. ``builder`` replaces the default
    registry (``factorized_prior`` for the codec, :mod:`vision._models` otherwise).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if expected_digest is not None:
        try:
            pinned = bytes.fromhex(expected_digest)
        except ValueError:
            raise BundleError("expected_digest must be hex") from None
        if len(pinned) != 48:
            raise BundleError("expected_digest must be a SHA-384 digest (48 bytes)")
        if not hmac.compare_digest(bytes.fromhex(manifest.digest()), pinned):
            raise BundleError("bundle manifest digest does not match the pinned digest")
    wanted = tuple(manifest.networks) if roles is None else tuple(dict.fromkeys(roles))
    for role in wanted:
        if role not in ROLES:
            raise BundleError(f"unknown network role {role!r}")
        if role not in manifest.networks:
            raise BundleError(f"the bundle has no {role} network")
    build = builder or _default_builder
    networks = {
        role: _load_network(directory, manifest.networks[role], build, device) for role in wanted
    }
    return Bundle(directory=directory, manifest=manifest, networks=MappingProxyType(networks))
