"""PMC2 vision pipeline: data, classifiers, perturbation generator, neural codec."""

from vision._codec import make_codec
from vision._errors import BundleError, CodecError, VisionError

__all__: list[str] = ["BundleError", "CodecError", "VisionError", "make_codec"]
