"""PSPNet: the dilated ResNet against torchvision's published parameter counts, the pyramid
head against its closed-form count, output strides, dilations and full-size logits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from tradi.models import PSPNet, build_model
from tradi.models.pspnet import DilatedResNet


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# torchvision's resnet{18,34,50,101} parameter counts (its model docs) minus the 1000-class
# fully connected layer (512 or 2048 inputs): dilation changes no parameter.
@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (18, 11_689_512 - 513_000),
        (34, 21_797_672 - 513_000),
        (50, 25_557_032 - 2_049_000),
        (101, 44_549_160 - 2_049_000),
    ],
)
def test_backbone_has_the_published_resnet_parameter_count(depth: int, expected: int) -> None:
    assert _count(DilatedResNet(depth)) == expected


def test_head_parameter_count_matches_the_closed_form() -> None:
    classes, width = 13, 16
    model = PSPNet(classes, depth=18, width=width)
    c = 8 * width  # ResNet-18's last stage
    reduced, head = c // 4, c // 4
    pyramid = 4 * (c * reduced + 2 * reduced)  # 1x1 conv (no bias) + BatchNorm per bin
    fused = (c + 4 * reduced) * head * 9 + 2 * head  # 3x3 conv + BatchNorm
    classifier = head * classes + classes
    assert _count(model) - _count(model.backbone) == pyramid + fused + classifier


@pytest.mark.parametrize(("output_stride", "size"), [(8, (8, 12)), (16, (4, 6))])
def test_features_keep_the_output_stride(output_stride: int, size: tuple[int, int]) -> None:
    backbone = DilatedResNet(18, width=8, output_stride=output_stride)
    assert backbone(torch.randn(1, 3, 64, 96)).shape == (1, 64, *size)


def test_stride_becomes_dilation_in_the_last_stages() -> None:
    backbone = DilatedResNet(50, width=8, output_stride=8)
    expected = {2: (1, 2), 3: (2, 4)}  # stage index -> dilation of its first, later blocks
    for index, (first, later) in expected.items():
        stage = backbone.stages[index]
        for block_index, block in enumerate(stage):
            three_by_three = [
                m for m in block.residual if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
            ]
            (conv,) = three_by_three
            dilation = first if block_index == 0 else later
            assert conv.stride == (1, 1) and conv.dilation == (dilation, dilation)
            assert conv.padding == (dilation, dilation)  # same size out


@pytest.mark.parametrize("size", [(90, 120), (45, 81)])
def test_logits_come_back_at_the_input_size_and_train_every_parameter(
    size: tuple[int, int],
) -> None:
    torch.manual_seed(0)
    model = build_model("pspnet", 5, (3, *size), depth=18, width=8)
    x = torch.randn(2, 3, *size)
    logits = model(x)
    assert logits.shape == (2, 5, *size)
    nn.functional.cross_entropy(logits, torch.randint(0, 5, (2, *size))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert any(isinstance(m, nn.Dropout2d) and m.p == 0.1 for m in model.modules())


def test_bad_architectures_are_refused() -> None:
    with pytest.raises(ValueError, match="depth"):
        DilatedResNet(20)
    with pytest.raises(ValueError, match="output_stride"):
        DilatedResNet(18, output_stride=32)
    with pytest.raises(ValueError, match="bins"):
        PSPNet(3, bins=())
