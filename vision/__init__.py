"""PMC2 vision pipeline: data, classifiers, perturbation generator, neural codec."""

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
from vision._errors import BundleError, CodecError, VisionError

__all__: list[str] = [
    "FORMAT_VERSION",
    "BundleError",
    "CodecError",
    "CodecLimits",
    "StreamHeader",
    "VisionError",
    "decode_batch",
    "decode_batch_latents",
    "decode_single",
    "decode_single_latents",
    "encode_batch",
    "encode_single",
    "make_codec",
    "quantized_latents",
]
