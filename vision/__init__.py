"""PMC2 vision pipeline: data, classifiers, perturbation generator, neural codec."""

from typing import TYPE_CHECKING, Any

from vision._bench import BandwidthConfig, run_bandwidth, run_speed
from vision._bundle import (
    DEFAULT_BUNDLE_BUDGET,
    DEFAULT_BUNDLE_DIR,
    MAX_BUNDLE_BYTES,
    ROLES,
    Bundle,
    BundleManifest,
    NetworkEntry,
    NetworkSpec,
    load_bundle,
    manifest_digest,
    read_manifest,
    write_bundle,
)
from vision._codec import (
    FORMAT_VERSION,
    CodecLimits,
    StreamHeader,
    decode_batch,
    decode_batch_latents,
    decode_single,
    decode_single_latents,
    encode_batch,
    encode_single,
    make_codec,
    quantized_latents,
)
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
from vision._errors import BundleError, CodecError, VisionError

if TYPE_CHECKING:  # torch-backed names load lazily (see __getattr__): `pmc2 --help` stays fast
    from vision._models import (
        CLASSIFIER_ARCHS,
        PAPER_PAIRS,
        Classifier,
        UNetGenerator,
        build_classifier,
        build_generator,
    )
    from vision._train import (
        ClassifierTrainConfig,
        CodecTrainConfig,
        GeneratorTrainConfig,
        TrainError,
        load_classifier_dir,
        load_codec_dir,
        load_generator_dir,
        train_classifier,
        train_codec,
        train_generator,
    )

_LAZY = {
    **dict.fromkeys(
        (
            "CLASSIFIER_ARCHS",
            "PAPER_PAIRS",
            "Classifier",
            "UNetGenerator",
            "build_classifier",
            "build_generator",
        ),
        "vision._models",
    ),
    **dict.fromkeys(
        (
            "ClassifierTrainConfig",
            "CodecTrainConfig",
            "GeneratorTrainConfig",
            "TrainError",
            "load_classifier_dir",
            "load_codec_dir",
            "load_generator_dir",
            "train_classifier",
            "train_codec",
            "train_generator",
        ),
        "vision._train",
    ),
}


def __getattr__(name: str) -> Any:
    """Import the torch-backed modules on first use of one of their names."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vision' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__: list[str] = [
    "CIFAR10_CLASSES",
    "CLASSIFIER_ARCHS",
    "DEFAULT_BUNDLE_BUDGET",
    "DEFAULT_BUNDLE_DIR",
    "FORMAT_VERSION",
    "MAX_BUNDLE_BYTES",
    "PAPER_PAIRS",
    "ROLES",
    "BandwidthConfig",
    "Bundle",
    "BundleError",
    "BundleManifest",
    "CifarArrays",
    "Classifier",
    "ClassifierTrainConfig",
    "CodecError",
    "CodecLimits",
    "CodecTrainConfig",
    "DataError",
    "GeneratorTrainConfig",
    "NetworkEntry",
    "NetworkSpec",
    "RestrictedUnpickler",
    "StreamHeader",
    "TrainError",
    "UNetGenerator",
    "VisionError",
    "build_classifier",
    "build_generator",
    "decode_batch",
    "decode_batch_latents",
    "decode_single",
    "decode_single_latents",
    "encode_batch",
    "encode_single",
    "load_bundle",
    "load_cifar10",
    "load_classifier_dir",
    "load_codec_dir",
    "load_generator_dir",
    "load_python_batches",
    "make_codec",
    "manifest_digest",
    "quantized_latents",
    "read_class_folders",
    "read_class_tar",
    "read_manifest",
    "run_bandwidth",
    "run_speed",
    "split_test",
    "train_classifier",
    "train_codec",
    "train_generator",
    "write_bundle",
]
