"""Neural codec: CompressAI ``FactorizedPrior`` and its bit-string forms."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compressai.models import FactorizedPrior

__all__ = ["make_codec"]


def make_codec(N: int = 128, M: int = 192) -> FactorizedPrior:
    """Build an (untrained) ``FactorizedPrior`` with ``N`` hidden and ``M`` latent channels.

    The paper's codec is ``N=128, M=192`` (about 12 MB of float32 weights). Call
    ``codec.update()`` after training or loading, before producing bit-strings.
    """
    if N <= 0 or M <= 0:
        raise ValueError(f"channel counts must be positive, got N={N}, M={M}")
    from compressai.models import FactorizedPrior

    return FactorizedPrior(N=N, M=M)
