"""Shapes and rebuild round trips of every network."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from vision._models import (
    CLASSIFIER_ARCHS,
    PAPER_PAIRS,
    AirbenchNet,
    UNetGenerator,
    build_classifier,
    build_generator,
    count_parameters,
)

SMALL: dict[str, dict[str, Any]] = {
    "airbench": {"widths": [8, 16, 16]},
    "vgg13_bn": {"width": 0.125},
    "resnet18": {"width": 8},
    "densenet121": {"growth": 4},
    "googlenet": {},
}


@pytest.mark.parametrize("arch", sorted(CLASSIFIER_ARCHS))
def test_classifier_shapes_and_rebuild(arch: str) -> None:
    torch.manual_seed(0)
    model = build_classifier(arch, SMALL[arch]).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    # the manifest pair (arch, config) rebuilds the same network
    twin = build_classifier(model.arch, model.config()).eval()
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(twin(x), logits)
    # normalisation is inside the network and travels with the weights
    assert {"mean", "std"} <= set(model.state_dict())


def test_classifier_normalises_internally() -> None:
    model = AirbenchNet((4, 8, 8)).eval()
    seen: list[torch.Tensor] = []
    model.stem.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    x = torch.full((1, 3, 32, 32), 0.4914)
    with torch.no_grad():
        model(x)
    assert seen[0][0, 0].abs().max() < 1e-4  # the red mean maps to 0


def test_full_size_defaults_parameter_counts() -> None:
    # the paper's CIFAR networks at full size (order of magnitude checks)
    assert 9e6 < count_parameters(build_classifier("vgg13_bn")) < 10e6
    assert 11e6 < count_parameters(build_classifier("resnet18")) < 11.3e6
    assert 1.9e6 < count_parameters(build_classifier("airbench")) < 2.1e6


def test_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown"):
        build_classifier("alexnet")
    with pytest.raises(ValueError, match="unknown"):
        build_generator("pix2pix")


def test_paper_pairs() -> None:
    assert PAPER_PAIRS["vgg13"] == ("vgg13_bn", "resnet18")
    for target, aux in PAPER_PAIRS.values():
        assert target in CLASSIFIER_ARCHS and aux in CLASSIFIER_ARCHS


def test_unet_widths_and_structure() -> None:
    g = UNetGenerator()  # paper size
    convs = [g.inc[0], *(d[0] for d in g.downs)]  # type: ignore[index]
    widths = [c.out_channels for c in convs]
    assert widths == [32, 64, 128, 256, 512]
    assert len(g.ups) == 4
    assert all(isinstance(u.up, torch.nn.ConvTranspose2d) for u in g.ups)
    assert g.outc.kernel_size == (1, 1)
    acts = [m for m in g.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert acts and all(a.negative_slope == 0.2 for a in acts)


def test_unet_output_range_and_residual() -> None:
    torch.manual_seed(0)
    g = build_generator("unet", {"base": 4}).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        y = g(x)
        assert y.shape == x.shape
        assert y.min() >= 0 and y.max() <= 1
        g.outc.weight.zero_()
        assert g.outc.bias is not None
        g.outc.bias.zero_()
        torch.testing.assert_close(g(x), x)  # zero perturbation: the image itself
    twin = build_generator("unet", g.config())
    twin.load_state_dict(g.state_dict())
    with pytest.raises(ValueError, match="multiples of 16"):
        g(torch.rand(1, 3, 30, 30))
