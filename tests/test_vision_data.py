"""CIFAR-10 readers: class folders, tar archives, python batches (restricted unpickler)."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from vision._data import (
    CIFAR10_CLASSES,
    CifarArrays,
    DataError,
    RestrictedUnpickler,
    load_cifar10,
    load_python_batches,
    read_class_folders,
    read_class_tar,
    split_test,
)


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, format="PNG")
    return buf.getvalue()


def _colour(label: int, i: int) -> tuple[int, int, int]:
    return (label * 20, i, 255 - label * 20)


def _write_tar(path: Path, split: str, classes: tuple[str, ...], per_class: int) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for label, cls in enumerate(classes):
            for i in range(per_class):
                data = _png(_colour(label, i))
                info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _py2_style_dumps(obj: object) -> bytes:
    """Protocol 2 with ``bytes`` written as Python 2 ``str`` opcodes, as in the CIFAR files."""
    base: Any = pickle._Pickler  # pure-Python pickler

    class Py2StylePickler(base):  # type: ignore[misc]
        dispatch = base.dispatch.copy()

        def save_bytes(self, data: bytes) -> None:
            n = len(data)
            if n < 256:
                self.write(pickle.SHORT_BINSTRING + bytes([n]) + data)
            else:
                self.write(pickle.BINSTRING + struct.pack("<i", n) + data)
            self.memoize(data)

        dispatch[bytes] = save_bytes

    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _batch_pickle(images: npt.NDArray[np.uint8], labels: list[int], py2: bool) -> bytes:
    obj = {
        b"batch_label": b"testing batch",
        b"labels": labels,
        b"data": images.transpose(0, 3, 1, 2).reshape(len(labels), -1).copy(),
        b"filenames": [f"{i}.png".encode() for i in range(len(labels))],
    }
    if py2:
        return _py2_style_dumps(obj)
    return pickle.dumps(obj, protocol=3)


def _write_batches(root: Path, py2: bool) -> CifarArrays:
    rng = np.random.default_rng(0)
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    all_images, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=20)]
        (directory / name).write_bytes(_batch_pickle(images, labels, py2))
        if name != "test_batch":
            all_images.append(images)
            all_labels += labels
    return CifarArrays(np.concatenate(all_images), np.asarray(all_labels, dtype=np.int64))


def test_tar_archive_labels_follow_alphabetical_folders(tmp_path: Path) -> None:
    classes = ("zebra", "ant", "moth")
    archive = tmp_path / "train.tar.gz"
    _write_tar(archive, "train", classes, per_class=3)
    data = read_class_tar(archive, split="train")
    assert data.classes == ("ant", "moth", "zebra")
    assert data.images.shape == (9, 32, 32, 3)
    assert list(data.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # "ant" was written as label 1 in _colour's scheme: its first pixel says so
    assert tuple(data.images[0, 0, 0]) == _colour(1, 0)


def test_class_folders(tmp_path: Path) -> None:
    for label, cls in enumerate(CIFAR10_CLASSES[:3]):
        (tmp_path / cls).mkdir()
        for i in range(2):
            (tmp_path / cls / f"{i}.png").write_bytes(_png(_colour(label, i)))
    data = read_class_folders(tmp_path, classes=CIFAR10_CLASSES)
    assert list(data.labels) == [0, 0, 1, 1, 2, 2]
    assert tuple(data.images[3, 5, 5]) == _colour(1, 1)


def test_tar_refuses_links_and_traversal(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("train/cat/0.png")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataError, match="non-regular"):
        read_class_tar(archive, split="train")
    archive2 = tmp_path / "bad2.tar"
    with tarfile.open(archive2, "w") as tar:
        data = _png((1, 2, 3))
        info = tarfile.TarInfo("train/../cat/0.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="unsafe"):
        read_class_tar(archive2)


def test_garbage_image_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot decode"):
        read_class_folders(tmp_path)


@pytest.mark.parametrize("py2", [True, False])
def test_python_batches(tmp_path: Path, py2: bool) -> None:
    expected = _write_batches(tmp_path, py2)
    train = load_python_batches(tmp_path / "cifar-10-batches-py", "train")
    np.testing.assert_array_equal(train.images, expected.images)
    np.testing.assert_array_equal(train.labels, expected.labels)
    test = load_cifar10(tmp_path, "test", cache_dir=tmp_path / "cache")
    assert len(test) == 20


def test_py2_style_pickle_references_only_the_admitted_globals() -> None:
    import pickletools

    blob = _batch_pickle(np.zeros((1, 32, 32, 3), np.uint8), [3], py2=True)
    globals_ = {arg for op, arg, _ in pickletools.genops(blob) if op.name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({b"data": _Evil()}, protocol=2),
        pickle.dumps({b"data": _Evil()}, protocol=4),
        pickle.dumps(eval, protocol=2),
        pickle.dumps(b"x", protocol=2),  # _codecs.encode: not in the real files
    ],
)
def test_restricted_unpickler_refuses_other_globals(tmp_path: Path, payload: bytes) -> None:
    with pytest.raises(DataError, match="refusing pickle global"):
        RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    (directory / "test_batch").write_bytes(payload)
    with pytest.raises(DataError):
        load_python_batches(directory, "test")


def test_malformed_batches_are_rejected(tmp_path: Path) -> None:
    directory = tmp_path / "b"
    directory.mkdir()
    cases = {
        b"\x80\x02garbage": "malformed",
        pickle.dumps([1, 2], protocol=3): "expected a dict",
        pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, 3): "3072",
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, 3): "labels",
        pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [11]}, 3): "range",
    }
    for blob, message in cases.items():
        (directory / "test_batch").write_bytes(blob)
        with pytest.raises(DataError, match=message):
            load_python_batches(directory, "test")


def test_cache_is_used_and_keyed_by_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_tar(tmp_path / "test.tar.gz", "test", CIFAR10_CLASSES, per_class=2)
    cache = tmp_path / "cache"
    first = load_cifar10(tmp_path, "test", cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 2

    def boom(*args: object, **kwargs: object) -> CifarArrays:
        raise AssertionError("archive decoded again")

    monkeypatch.setattr("vision._data.read_class_tar", boom)
    second = load_cifar10(tmp_path, "test", cache_dir=cache)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)


def test_missing_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no CIFAR-10"):
        load_cifar10(tmp_path, "train")


def test_split_is_stratified_disjoint_and_fixed() -> None:
    labels = np.repeat(np.arange(10, dtype=np.int64), 8)
    images = np.zeros((80, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(80)
    data = CifarArrays(images, labels)
    val, ev = split_test(data)
    assert len(val) == len(ev) == 40
    assert np.bincount(val.labels).tolist() == [4] * 10
    ids_v, ids_e = set(val.images[:, 0, 0, 0]), set(ev.images[:, 0, 0, 0])
    assert not ids_v & ids_e and len(ids_v | ids_e) == 80
    val2, _ = split_test(data)
    np.testing.assert_array_equal(val.images, val2.images)


def test_shared_cifar10_test_split(cifar10_dir: Path, tmp_path: Path) -> None:
    test = load_cifar10(cifar10_dir, "test", cache_dir=tmp_path)
    assert test.images.shape == (10_000, 32, 32, 3)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    val, ev = split_test(test)
    assert len(val) == len(ev) == 5000
    assert np.bincount(ev.labels).tolist() == [500] * 10
    assert len(set(ev.labels[:50].tolist())) == 10  # a prefix is a class-mixed sample
