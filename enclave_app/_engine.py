"""Perturb and encode a batch of images: the enclave's model work.

:class:`VisionEngine` holds the protective-perturbation generator (the U-Net of
``vision._models``) and the neural codec's encoder (CompressAI ``FactorizedPrior`` with
the coding tables from the bundle). :meth:`VisionEngine.run` takes ``N`` RGB images of
``input_size x input_size`` (``uint8``, the output of ``_image.decode_jpeg``) and returns
their bit-strings, timing each stage. It is synchronous and meant to run on the
enclave's inference worker thread, never on the event loop.

The codec identifier (what the egress policy names) is derived from the bundle's codec
network: ``pmc2-fp-<N>-<M>/v<bit-string format version>`` (``FactorizedPrior`` with ``N``
hidden and ``M`` latent channels; the paper's codec is ``pmc2-fp-128-192/v2``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from vision import FORMAT_VERSION, BundleManifest

if TYPE_CHECKING:
    from torch import nn

__all__ = ["EncodedBatch", "VisionEngine", "codec_id_for"]

_DOWNSAMPLING = 16


def codec_id_for(manifest: BundleManifest) -> str:
    """The codec identifier of a bundle's codec network (see the module docstring)."""
    entry = manifest.networks.get("codec")
    if entry is None:
        raise ValueError("the bundle has no codec network")
    if entry.arch != "factorized_prior":
        raise ValueError(f"unknown codec architecture {entry.arch!r}")
    n, m = entry.config.get("N", 128), entry.config.get("M", 192)
    if not isinstance(n, int) or not isinstance(m, int):
        raise ValueError("the codec config has non-integer N or M")
    return f"pmc2-fp-{n}-{m}/v{FORMAT_VERSION}"


@dataclass(frozen=True)
class EncodedBatch:
    """The bit-strings of one batch: one stream (``batch`` form) or one per image."""

    strings: tuple[bytes, ...]
    count: int
    batch_form: bool
    perturb_us: int
    encode_us: int


class VisionEngine:
    """The generator and the codec encoder, on one device (CPU by default)."""

    def __init__(
        self,
        generator: nn.Module,
        codec: Any,
        *,
        codec_id: str,
        input_size: int = 32,
        batch_form: bool = True,
    ) -> None:
        if input_size < _DOWNSAMPLING or input_size % _DOWNSAMPLING:
            raise ValueError(f"input_size must be a positive multiple of {_DOWNSAMPLING}")
        self.generator = generator.eval()
        self.codec = codec.eval()
        self.codec_id = codec_id
        self.input_size = input_size
        self.batch_form = batch_form
        self._device = next(generator.parameters()).device

    @property
    def latent_side(self) -> int:
        """Rows (and columns) of the latent grid of one image."""
        return self.input_size // _DOWNSAMPLING

    def run(self, images: npt.NDArray[np.uint8]) -> EncodedBatch:
        """Perturb then encode ``images`` (``N x size x size x 3`` ``uint8``)."""
        import torch

        from vision import encode_batch, encode_single

        size = self.input_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.shape[0] < 1:
            raise ValueError(f"expected N x {size} x {size} x 3 images, got {images.shape}")
        count = int(images.shape[0])
        start = time.perf_counter_ns()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self._device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            perturbed = self.generator(x)
        middle = time.perf_counter_ns()
        if self.batch_form:
            strings: tuple[bytes, ...] = (encode_batch(self.codec, perturbed),)
        else:
            strings = tuple(encode_single(self.codec, perturbed))
        end = time.perf_counter_ns()
        return EncodedBatch(
            strings=strings,
            count=count,
            batch_form=self.batch_form,
            perturb_us=(middle - start) // 1000,
            encode_us=(end - middle) // 1000,
        )
