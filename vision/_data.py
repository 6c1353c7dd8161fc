"""CIFAR-10 loading: class-folder trees, tar archives of them, the official python batches.

Every reader returns a :class:`CifarArrays` value: ``uint8`` images in NHWC layout
(``N x 32 x 32 x 3``) and ``int64`` labels. Labels follow the alphabetical order of the
class folders, which is the standard CIFAR-10 label order.

The official ``cifar-10-batches-py`` files are pickles. They are read with
:class:`RestrictedUnpickler`, which admits only the three globals those files reference
(numpy's array reconstruction: ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
``numpy.dtype``) and refuses everything else, so a tampered batch file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vision._errors import VisionError

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CifarArrays",
    "DataError",
    "RestrictedUnpickler",
    "load_cifar10",
    "load_python_batches",
    "read_class_folders",
    "read_class_tar",
    "split_test",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
#: Per-channel mean and standard deviation of the CIFAR-10 training pixels in [0, 1].
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

Split = Literal["train", "test"]
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_MAX_MEMBER_BYTES = 1 << 20  # one 32x32 image file is a few hundred bytes
_SPLIT_SEED = 20250401


class DataError(VisionError):
    """A dataset file is missing, malformed, or not what CIFAR-10 looks like."""


@dataclass(frozen=True)
class CifarArrays:
    """Decoded images (``uint8``, ``N x H x W x 3``) with their labels (``int64``, ``N``)."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    classes: tuple[str, ...] = CIFAR10_CLASSES

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise DataError(
                f"images must be uint8 NxHxWx3, got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError("labels must be int64 with one label per image")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError("label out of range")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: npt.NDArray[np.int64]) -> CifarArrays:
        """The images at ``index`` (a copy)."""
        return CifarArrays(self.images[index].copy(), self.labels[index].copy(), self.classes)


# --- image decoding -------------------------------------------------------------------


def _decode_image(data: bytes, name: str) -> npt.NDArray[np.uint8]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {name}: {exc}") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    if array.shape != (32, 32, 3):
        raise DataError(f"{name}: expected a 32x32 RGB image, got {array.shape}")
    return array


def _assemble(
    entries: Iterable[tuple[str, str, bytes]], classes: tuple[str, ...] | None
) -> CifarArrays:
    """Build arrays from ``(class, file name, bytes)``; order: class, then file name."""
    items = sorted(entries, key=lambda e: (e[0], e[1]))
    found = tuple(sorted({cls for cls, _, _ in items}))
    names = classes if classes is not None else found
    unknown = set(found) - set(names)
    if unknown:
        raise DataError(f"unexpected class folders: {sorted(unknown)}")
    if not items:
        raise DataError("no images found")
    index = {name: i for i, name in enumerate(names)}
    images = np.stack([_decode_image(data, f"{cls}/{fn}") for cls, fn, data in items])
    labels = np.array([index[cls] for cls, _, _ in items], dtype=np.int64)
    return CifarArrays(images, labels, tuple(names))


def read_class_folders(root: Path, classes: tuple[str, ...] | None = None) -> CifarArrays:
    """Read ``root/<class>/<image>``; labels by alphabetical class-folder order."""
    if not root.is_dir():
        raise DataError(f"not a directory: {root}")

    def entries() -> Iterator[tuple[str, str, bytes]]:
        for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for file in sorted(cls_dir.iterdir()):
                if file.is_file() and file.suffix.lower() in _IMAGE_SUFFIXES:
                    yield cls_dir.name, file.name, file.read_bytes()

    return _assemble(entries(), classes)


def read_class_tar(
    archive: Path, split: str | None = None, classes: tuple[str, ...] | None = None
) -> CifarArrays:
    """Read a tar / tar.gz of ``[<split>/]<class>/<image>`` files.

    Members are read as data only (never extracted); links, devices and oversized
    members are refused. When ``split`` is given, only members under ``<split>/`` count.
    """

    def entries() -> Iterator[tuple[str, str, bytes]]:
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                for member in tar:
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise DataError(
                            f"{archive.name}: refusing non-regular member {member.name!r}"
                        )
                    parts = [p for p in member.name.split("/") if p not in ("", ".")]
                    if ".." in parts:
                        raise DataError(f"{archive.name}: unsafe member name {member.name!r}")
                    if split is not None:
                        if len(parts) != 3 or parts[0] != split:
                            continue
                        parts = parts[1:]
                    elif len(parts) == 3:
                        parts = parts[1:]
                    if len(parts) != 2 or not parts[1].lower().endswith(_IMAGE_SUFFIXES):
                        continue
                    if member.size > _MAX_MEMBER_BYTES:
                        raise DataError(f"{archive.name}: member too large {member.name!r}")
                    handle = tar.extractfile(member)
                    if handle is None:  # pragma: no cover - regular files always have data
                        raise DataError(f"{archive.name}: unreadable member {member.name!r}")
                    yield parts[0], parts[1], handle.read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"cannot read archive {archive}: {exc}") from exc

    return _assemble(entries(), classes)


# --- the official python batches ------------------------------------------------------


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler admitting only what the CIFAR-10 python batches contain.

    Those files hold dicts with byte-string (or str) keys, lists of ints and byte
    strings, and numpy arrays. Pickled numpy arrays reference exactly three globals:
    ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``
    (``numpy._core.multiarray`` when written by numpy 2). Every other global is refused
    with :class:`DataError`, so ``os.system`` and friends never get called.
    """

    _ALLOWED: frozenset[tuple[str, str]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise DataError(f"refusing pickle global {module}.{name}")
        if name == "_reconstruct":
            from numpy.core.multiarray import _reconstruct  # type: ignore[attr-defined]

            return _reconstruct
        return np.ndarray if name == "ndarray" else np.dtype

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refusing pickle persistent id")


def _unpickle(data: bytes, name: str) -> Any:
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # any malformed pickle: fail closed with one error type
        raise DataError(f"{name}: malformed pickle: {exc}") from exc


def _key(d: dict[Any, Any], key: str, name: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{name}: missing key {key!r}")


def _read_batch(path: Path) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    obj = _unpickle(path.read_bytes(), path.name)
    if not isinstance(obj, dict):
        raise DataError(f"{path.name}: expected a dict")
    data = _key(obj, "data", path.name)
    labels = _key(obj, "labels", path.name)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path.name}: data must be a uint8 N x 3072 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path.name}: data rows must have 3072 bytes")
    if not isinstance(labels, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in labels
    ):
        raise DataError(f"{path.name}: labels must be a list of ints")
    if len(labels) != data.shape[0]:
        raise DataError(f"{path.name}: {len(labels)} labels for {data.shape[0]} images")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, np.asarray(labels, dtype=np.int64)


def load_python_batches(directory: Path, split: Split) -> CifarArrays:
    """Read ``data_batch_1..5`` (train) or ``test_batch`` (test) of ``cifar-10-batches-py``."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = []
    for name in names:
        path = directory / name
        if not path.is_file():
            raise DataError(f"missing CIFAR-10 batch file: {name}")
        parts.append(_read_batch(path))
    return CifarArrays(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


# --- discovery and caching ------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached(source: Path, split: str, cache_dir: Path | None, read: Any) -> CifarArrays:
    """Decode via ``read()`` once; keep ``.npy`` arrays keyed by the source's sha256."""
    if cache_dir is None:
        result: CifarArrays = read()
        return result
    key = f"{_sha256(source)}-{split}"
    img_path, lbl_path = cache_dir / f"{key}.images.npy", cache_dir / f"{key}.labels.npy"
    if img_path.is_file() and lbl_path.is_file():
        try:
            return CifarArrays(
                np.load(img_path, allow_pickle=False), np.load(lbl_path, allow_pickle=False)
            )
        except (OSError, ValueError, DataError):
            pass  # a damaged cache entry is rebuilt below
    arrays: CifarArrays = read()
    cache_dir.mkdir(parents=True, exist_ok=True)
    for path, array in ((img_path, arrays.images), (lbl_path, arrays.labels)):
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            np.save(fh, array, allow_pickle=False)
        tmp.replace(path)
    return arrays


def default_cache_dir() -> Path:
    """``$PMC2_CACHE`` or ``.cache/`` under the current directory."""
    env = os.environ.get("PMC2_CACHE")
    return Path(env) if env else Path(".cache") / "cifar10"


def load_cifar10(root: Path, split: Split, cache_dir: Path | None = None) -> CifarArrays:
    """Load a CIFAR-10 split from ``root``, whichever of the supported forms it holds.

    Tried in order: ``root/<split>.tar.gz`` / ``.tgz`` / ``.tar`` (``<split>/<class>/*``),
    the class-folder tree ``root/<split>/<class>/*``, the official python batches in
    ``root/cifar-10-batches-py/`` or ``root`` itself. Archives and batch files are
    decoded once and cached in ``cache_dir`` (``.npy``, keyed by the file's sha256).
    """
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}")
    for suffix in (".tar.gz", ".tgz", ".tar"):
        archive = root / f"{split}{suffix}"
        if archive.is_file():
            return _cached(
                archive, split, cache_dir, lambda a=archive: read_class_tar(a, split=split)
            )
    folder = root / split
    if folder.is_dir():
        return read_class_folders(folder)
    for batches in (root / "cifar-10-batches-py", root):
        marker = batches / ("data_batch_1" if split == "train" else "test_batch")
        if marker.is_file():
            return _cached(
                marker, split, cache_dir, lambda b=batches: load_python_batches(b, split)
            )
    raise DataError(f"no CIFAR-10 {split} split found under {root}")


def split_test(test: CifarArrays, seed: int = _SPLIT_SEED) -> tuple[CifarArrays, CifarArrays]:
    """Split the test set into (validation, evaluation) halves with a fixed seed.

    Stratified: each class contributes half its images to each half (5,000 / 5,000 for
    CIFAR-10), so both halves stay class-balanced. Each half comes in a fixed shuffled
    order, so its first N images are a class-mixed sample.
    """
    rng = np.random.default_rng(seed)
    val_idx: list[npt.NDArray[np.int64]] = []
    eval_idx: list[npt.NDArray[np.int64]] = []
    for label in range(len(test.classes)):
        idx = np.flatnonzero(test.labels == label).astype(np.int64)
        idx = rng.permutation(idx)
        half = idx.size // 2
        val_idx.append(np.sort(idx[:half]))
        eval_idx.append(np.sort(idx[half:]))
    # shuffled (fixed order): any prefix of a half is a class-mixed sample of it
    val_all = rng.permutation(np.concatenate(val_idx)).astype(np.int64)
    eval_all = rng.permutation(np.concatenate(eval_idx)).astype(np.int64)
    return test.subset(val_all), test.subset(eval_all)
