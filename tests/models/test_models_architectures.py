"""Architectures: exact structure, published parameter counts, shapes, gradients, dropout."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tradi.models import MLP, MODEL_NAMES, ENet, LeNet5, ResNet20, WideResNet, build_model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mlp_layers_are_the_papers_in_order() -> None:
    model = MLP()
    kinds = [type(m) for m in model.layers]
    assert kinds == [
        nn.Flatten,
        nn.Linear, nn.BatchNorm1d, nn.ReLU,
        nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout,
        nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout,
        nn.Linear,
    ]  # fmt: skip
    linears = [m for m in model.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 200),
        (200, 200),
        (200, 200),
        (200, 10),
    ]
    assert all(m.p == 0.1 for m in model.layers if isinstance(m, nn.Dropout))


def test_mlp_init_is_kaiming_normal_with_zero_biases() -> None:
    torch.manual_seed(0)
    model = MLP()
    for layer in (m for m in model.layers if isinstance(m, nn.Linear)):
        assert torch.count_nonzero(layer.bias) == 0
        weights = layer.weight.detach().flatten().double()
        expected_std = math.sqrt(2.0 / layer.in_features)
        # Tolerance: 5 standard errors of a sample std, 5 / sqrt(2 n) relative.
        tolerance = 5.0 / math.sqrt(2 * weights.numel())
        assert abs(weights.std().item() / expected_std - 1.0) < tolerance
        assert abs(weights.mean().item()) < 5 * expected_std / math.sqrt(weights.numel())


def test_mlp_flattens_images_and_takes_8x8_digits() -> None:
    torch.manual_seed(0)
    model = MLP().eval()
    images = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(model(images), model(images.reshape(4, 784)))
    digits_model = build_model("mlp", 5, (1, 8, 8))
    assert digits_model.layers[1].in_features == 64
    assert digits_model(torch.randn(3, 1, 8, 8)).shape == (3, 5)


def test_published_parameter_counts() -> None:
    # ResNet-20, option A: convs 3x3 without bias, BN (2 params per channel), FC 64 -> 10.
    resnet_expected = 3 * 16 * 9 + 2 * 16 + 64 * 10 + 10
    for c_in, c in [(16, 16)] * 3 + [(16, 32)] + [(32, 32)] * 2 + [(32, 64)] + [(64, 64)] * 2:
        resnet_expected += c_in * c * 9 + c * c * 9 + 4 * c
    assert count_parameters(ResNet20()) == resnet_expected == 269_722  # He et al.: 0.27M

    # WRN-28-10: 4 pre-activation blocks per stage, 1x1 projections where the width changes.
    wrn_expected = 3 * 16 * 9 + 2 * 640 + 640 * 10 + 10
    c_in = 16
    for c in (160, 320, 640):
        for _ in range(4):
            wrn_expected += 2 * c_in + c_in * c * 9 + 2 * c + c * c * 9
            wrn_expected += c_in * c if c_in != c else 0
            c_in = c
    with torch.device("meta"):
        wrn = WideResNet()
    assert count_parameters(wrn) == wrn_expected
    assert abs(wrn_expected / 1e6 - 36.5) < 0.05  # Zagoruyko & Komodakis: 36.5M

    assert count_parameters(LeNet5(in_channels=1, input_size=32)) == 61_706  # classic LeNet-5
    assert 0.35e6 < count_parameters(ENet(num_classes=11)) < 0.39e6  # Paszke et al.: 0.37M


@pytest.mark.parametrize(
    ("name", "input_shape", "num_classes"),
    [
        ("mlp", (1, 28, 28), 10),
        ("lenet5", (1, 28, 28), 10),
        ("lenet5", (3, 32, 32), 10),
        ("resnet20", (3, 32, 32), 10),
        ("enet", (3, 90, 120), 10),
    ],
)
def test_output_shapes(name: str, input_shape: tuple[int, int, int], num_classes: int) -> None:
    model = build_model(name, num_classes, input_shape).eval()
    out = model(torch.randn(2, *input_shape))
    expected = (2, num_classes, *input_shape[1:]) if name == "enet" else (2, num_classes)
    assert out.shape == expected


def test_wide_resnet_small_variant_forward() -> None:
    model = build_model("wrn28_10", 10, (3, 32, 32), depth=10, width=2).eval()
    assert len(model.blocks) == 3
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [m.p for m in dropouts] == [0.3] * 3  # one per block, the paper's dropout variant
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet20_option_a_shortcut_is_strided_zero_padded_identity() -> None:
    block = ResNet20().blocks[3]  # first block of stage 2: 16 -> 32 channels, stride 2
    x = torch.randn(2, 16, 32, 32)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 16, 16)
    assert list(block.shortcut.parameters()) == []
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0 and torch.count_nonzero(out[:, 24:]) == 0


@pytest.mark.parametrize("size", [(90, 120), (45, 63)])
def test_enet_keeps_sizes_not_divisible_by_8_and_backpropagates(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = ENet(num_classes=10)
    x = torch.randn(2, 3, *size)
    logits = model(x)
    assert logits.shape == (2, 10, *size)
    target = torch.randint(0, 10, (2, *size))
    target[0, :5] = 255
    nn.functional.cross_entropy(logits, target, ignore_index=255).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.shape == param.shape, name
        assert torch.isfinite(param.grad).all(), name
    assert model.initial.conv.weight.grad.abs().sum() > 0


def test_enet_dropout_layout() -> None:
    model = ENet(num_classes=11, dropout=0.1)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)]
    # stage 1: downsampling + 4 bottlenecks at 0.01; stages 2-5: 1 + 8 + 8 + 1 + 2 + 1 + 1 at 0.1.
    assert rates == [0.01] * 5 + [0.1] * 22
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


@pytest.mark.parametrize(
    ("name", "input_shape"),
    [
        ("mlp", (1, 28, 28)),
        ("lenet5", (1, 28, 28)),
        ("resnet20", (3, 32, 32)),
        ("enet", (3, 24, 32)),
    ],
)
def test_dropout_modules_drive_mc_dropout(name: str, input_shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, 4, input_shape, dropout=0.3).eval()
    x = torch.randn(3, *input_shape)
    torch.testing.assert_close(model(x), model(x))
    for module in model.modules():
        if isinstance(module, nn.Dropout | nn.Dropout2d):
            module.train()
    assert not torch.allclose(model(x), model(x))


def test_build_model_rejects_unknown_names_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("resnet20", 10, (3072,))
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=27)
    assert set(MODEL_NAMES) == {"mlp", "lenet5", "resnet20", "wrn28_10", "enet", "pspnet"}
