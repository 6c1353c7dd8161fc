"""Classifiers (CIFAR variants) and the U-Net perturbation generator.

One normalisation convention throughout: every network takes pixels in ``[0, 1]``,
``N x 3 x H x W`` float. Classifiers normalise internally with the CIFAR-10 mean and
standard deviation (a buffer, so it travels with the weights); the generator works on
raw ``[0, 1]`` pixels and returns ``[0, 1]`` pixels.

Every network can be rebuilt from ``(arch, config)`` through :func:`build_classifier` /
:func:`build_generator`; a model bundle's manifest stores exactly that pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vision._data import CIFAR10_MEAN, CIFAR10_STD

__all__ = [
    "CLASSIFIER_ARCHS",
    "PAPER_PAIRS",
    "VGG13BN",
    "AirbenchNet",
    "Classifier",
    "DenseNet121",
    "GoogLeNet",
    "ResNet18",
    "UNetGenerator",
    "build_classifier",
    "build_generator",
    "count_parameters",
]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameters."""
    return sum(p.numel() for p in model.parameters())


class Classifier(nn.Module):
    """Base: ``forward`` takes ``[0, 1]`` pixels, normalises, returns logits."""

    arch: str = ""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))

    def features_logits(self, x: Tensor) -> Tensor:
        """Logits of already normalised input (implemented by each architecture)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        mean = self.get_buffer("mean")
        std = self.get_buffer("std")
        return self.features_logits((x - mean) / std)

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this network."""
        raise NotImplementedError


def _conv_bn(ci: int, co: int, k: int = 3, stride: int = 1, pad: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(ci, co, k, stride, pad, bias=False), nn.BatchNorm2d(co)]


# --- the small CPU network ------------------------------------------------------------


class _ConvGroup(nn.Sequential):
    def __init__(self, ci: int, co: int) -> None:
        super().__init__(
            nn.Conv2d(ci, co, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(co),
            nn.GELU(),
            nn.Conv2d(co, co, 3, padding=1, bias=False),
            nn.BatchNorm2d(co),
            nn.GELU(),
        )


class AirbenchNet(Classifier):
    """Small CPU-friendly CIFAR net in the style of Keller Jordan's *airbench*.

    A 2x2 stem convolution, three conv groups (conv, max-pool, BN, GELU, conv, BN,
    GELU) of widths ``widths``, global 3x3 max-pool, linear head scaled by
    ``1 / 8``. No residual connections. ``widths=(64, 256, 256)`` is the airbench94 size
    (about 2.0 M parameters).
    """

    arch = "airbench"

    def __init__(
        self, widths: tuple[int, int, int] | list[int] = (64, 256, 256), num_classes: int = 10
    ) -> None:
        super().__init__(num_classes)
        w1, w2, w3 = (int(w) for w in widths)
        self.widths = (w1, w2, w3)
        self.stem = nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True)
        self.body = nn.Sequential(_ConvGroup(24, w1), _ConvGroup(w1, w2), _ConvGroup(w2, w3))
        self.head = nn.Linear(w3, num_classes, bias=False)

    def features_logits(self, x: Tensor) -> Tensor:
        x = self.body(F.gelu(self.stem(x)))
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        out: Tensor = self.head(x) / 8.0
        return out

    def config(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "num_classes": self.num_classes}


# --- VGG13_bn -------------------------------------------------------------------------

_VGG13 = (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG13BN(Classifier):
    """VGG13 with batch norm, CIFAR variant (5 pools to 1x1, one linear layer)."""

    arch = "vgg13_bn"

    def __init__(self, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.width = float(width)
        layers: list[nn.Module] = []
        ci = 3
        for v in _VGG13:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                co = max(1, round(int(v) * self.width))
                layers += [*_conv_bn(ci, co), nn.ReLU(inplace=True)]
                ci = co
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(ci, num_classes)

    def features_logits(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        out: Tensor = self.classifier(x)
        return out

    def config(self) -> dict[str, Any]:
        return {"width": self.width, "num_classes": self.num_classes}


# --- ResNet18 -------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    def __init__(self, ci: int, co: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ci, co, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(co)
        self.conv2 = nn.Conv2d(co, co, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(co)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or ci != co:
            self.shortcut = nn.Sequential(*_conv_bn(ci, co, 1, stride, 0))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(Classifier):
    """ResNet18, CIFAR variant (3x3 stem, no stem pool); ``width`` is the first stage."""

    arch = "resnet18"

    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.width = int(width)
        w = self.width
        self.stem = nn.Sequential(*_conv_bn(3, w), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        ci = w
        for i, co in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            stages += [_BasicBlock(ci, co, stride), _BasicBlock(co, co, 1)]
            ci = co
        self.layers = nn.Sequential(*stages)
        self.linear = nn.Linear(ci, num_classes)

    def features_logits(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)
        out: Tensor = self.linear(x)
        return out

    def config(self) -> dict[str, Any]:
        return {"width": self.width, "num_classes": self.num_classes}


# --- DenseNet121 ----------------------------------------------------------------------


class _DenseLayer(nn.Module):
    def __init__(self, ci: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(ci)
        self.conv1 = nn.Conv2d(ci, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class _Transition(nn.Module):
    def __init__(self, ci: int, co: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(ci)
        self.conv = nn.Conv2d(ci, co, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet121(Classifier):
    """DenseNet121 (blocks 6-12-24-16, bottleneck layers), CIFAR variant (3x3 stem)."""

    arch = "densenet121"

    def __init__(self, growth: int = 32, reduction: float = 0.5, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.growth, self.reduction = int(growth), float(reduction)
        c = 2 * self.growth
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        for i, n in enumerate((6, 12, 24, 16)):
            for _ in range(n):
                blocks.append(_DenseLayer(c, self.growth))
                c += self.growth
            if i < 3:
                co = int(c * self.reduction)
                blocks.append(_Transition(c, co))
                c = co
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c)
        self.linear = nn.Linear(c, num_classes)

    def features_logits(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        out: Tensor = self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return out

    def config(self) -> dict[str, Any]:
        return {"growth": self.growth, "reduction": self.reduction, "num_classes": self.num_classes}


# --- GoogLeNet ------------------------------------------------------------------------


def _cbr(ci: int, co: int, k: int) -> nn.Sequential:
    return nn.Sequential(*_conv_bn(ci, co, k, 1, k // 2), nn.ReLU(inplace=True))


class _Inception(nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        ci, n1, n3r, n3, n5r, n5, pp = dims
        self.b1 = _cbr(ci, n1, 1)
        self.b2 = nn.Sequential(_cbr(ci, n3r, 1), _cbr(n3r, n3, 3))
        self.b3 = nn.Sequential(_cbr(ci, n5r, 1), _cbr(n5r, n5, 3), _cbr(n5, n5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _cbr(ci, pp, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


_INCEPTION = (
    ("a3", 192, 64, 96, 128, 16, 32, 32),
    ("b3", 256, 128, 128, 192, 32, 96, 64),
    ("pool", 0, 0, 0, 0, 0, 0, 0),
    ("a4", 480, 192, 96, 208, 16, 48, 64),
    ("b4", 512, 160, 112, 224, 24, 64, 64),
    ("c4", 512, 128, 128, 256, 24, 64, 64),
    ("d4", 512, 112, 144, 288, 32, 64, 64),
    ("e4", 528, 256, 160, 320, 32, 128, 128),
    ("pool", 0, 0, 0, 0, 0, 0, 0),
    ("a5", 832, 256, 160, 320, 32, 128, 128),
    ("b5", 832, 384, 192, 384, 48, 128, 128),
)


class GoogLeNet(Classifier):
    """GoogLeNet (Inception v1), CIFAR variant (3x3 stem, 5x5 branches as two 3x3)."""

    arch = "googlenet"

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.pre = _cbr(3, 192, 3)
        layers: list[nn.Module] = []
        for name, *dims in _INCEPTION:
            layers.append(nn.MaxPool2d(3, 2, 1) if name == "pool" else _Inception(tuple(dims)))
        self.inceptions = nn.Sequential(*layers)
        self.linear = nn.Linear(1024, num_classes)

    def features_logits(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.inceptions(self.pre(x)), 1).flatten(1)
        out: Tensor = self.linear(x)
        return out

    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}


CLASSIFIER_ARCHS: dict[str, type[Classifier]] = {
    "airbench": AirbenchNet,
    "vgg13_bn": VGG13BN,
    "resnet18": ResNet18,
    "densenet121": DenseNet121,
    "googlenet": GoogLeNet,
}

#: The paper's (target, auxiliary) pairs, selected by the target's short name.
PAPER_PAIRS: dict[str, tuple[str, str]] = {
    "vgg13": ("vgg13_bn", "resnet18"),
    "resnet18": ("resnet18", "vgg13_bn"),
    "densenet121": ("densenet121", "resnet18"),
    "googlenet": ("googlenet", "resnet18"),
}


def build_classifier(arch: str, config: Mapping[str, Any] | None = None) -> Classifier:
    """Rebuild a classifier from its registry name and config (see ``Classifier.config``)."""
    try:
        cls = CLASSIFIER_ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown classifier architecture {arch!r}") from None
    return cls(**dict(config or {}))


# --- U-Net generator ------------------------------------------------------------------


class _DoubleConv(nn.Sequential):
    """(3x3 conv, batch norm, LeakyReLU 0.2) twice."""

    def __init__(self, ci: int, co: int) -> None:
        super().__init__(
            nn.Conv2d(ci, co, 3, padding=1, bias=False),
            nn.BatchNorm2d(co),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(co, co, 3, padding=1, bias=False),
            nn.BatchNorm2d(co),
            nn.LeakyReLU(0.2, inplace=True),
        )


class _Up(nn.Module):
    def __init__(self, ci: int, co: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(ci, co, kernel_size=2, stride=2)
        self.conv = _DoubleConv(2 * co, co)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        out: Tensor = self.conv(torch.cat([skip, self.up(x)], 1))
        return out


class UNetGenerator(nn.Module):
    """The protective-perturbation generator: a U-Net whose output is added to its input.

    Widths ``base * (1, 2, 4, 8, 16)`` (``base=32``: 32-64-128-256-512, the paper's),
    four max-pool downs, four transposed-conv ups with skip connections, a 1x1 output
    conv; ``x' = clamp(x + unet(x), 0, 1)``. Input height and width must be multiples
    of 16.
    """

    arch = "unet"

    def __init__(self, base: int = 32, channels: int = 3) -> None:
        super().__init__()
        self.base, self.channels = int(base), int(channels)
        w = [self.base * m for m in (1, 2, 4, 8, 16)]
        self.inc = _DoubleConv(self.channels, w[0])
        self.downs = nn.ModuleList(_DoubleConv(w[i], w[i + 1]) for i in range(4))
        self.ups = nn.ModuleList(_Up(w[i + 1], w[i]) for i in reversed(range(4)))
        self.outc = nn.Conv2d(w[0], self.channels, kernel_size=1)

    def perturbation(self, x: Tensor) -> Tensor:
        """The raw U-Net output (before it is added to the input)."""
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for up in self.ups:
            h = up(h, skips.pop())
        out: Tensor = self.outc(h)
        return out

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError("generator input height and width must be multiples of 16")
        return torch.clamp(x + self.perturbation(x), 0.0, 1.0)

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this network."""
        return {"base": self.base, "channels": self.channels}


def build_generator(arch: str = "unet", config: Mapping[str, Any] | None = None) -> UNetGenerator:
    """Rebuild the generator from its name (``"unet"``) and config."""
    if arch != "unet":
        raise ValueError(f"unknown generator architecture {arch!r}")
    return UNetGenerator(**dict(config or {}))
