"""The last layer of a network and the resize that may follow it.

A last-layer predictive (`tradi.inference.linearized`) samples the one Linear/Conv/ConvTranspose
module whose output gives the model's logits. Segmentation networks often resize after their
classifier: PSPNet, DeepLab and FCN upsample the classifier's logits to the input size with
bilinear interpolation (``F.interpolate(logits, x.shape[-2:], mode="bilinear",
align_corners=False)``). Such a layer still gives the logits, through a known linear map: the
resize is detected here by trying each of `RESIZE_MODES` on the layer's output and comparing it
with the logits (`logits_resize`), never assumed.

Every mode of `RESIZE_MODES` writes each output pixel as a convex combination of the layer's
pixels, sum_i a_i z_i with a_i >= 0 and sum_i a_i = 1 (linear interpolation: the products of the
1-D hat weights; nearest neighbour: one weight 1). That is what lets the closed-form variance be
resized too (`LinearizedEnsemble.logit_moments`: an upper bound, equal for nearest neighbour).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tradi.plumbing.adapters import ModelIO, to_device
from tradi.plumbing.modes import eval_mode
from tradi.plumbing.structure import named_modules

#: The layers a last layer may be: outputs sum_j h_j W_j + b with every weight used once per output element.
LAYER_TYPES = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

#: The resizes tried after a last layer, in order. "bilinear": `F.interpolate`'s linear
#: interpolation for the spatial dimensions (linear, bilinear or trilinear), align_corners=False
#: (PSPNet's, DeepLab's, FCN's); "bilinear_align_corners": the same with align_corners=True;
#: "nearest" and "nearest-exact": `F.interpolate`'s two nearest-neighbour modes.
RESIZE_MODES: tuple[str, ...] = ("bilinear", "bilinear_align_corners", "nearest", "nearest-exact")

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}

#: How close a resized output must be to the logits (relative, and absolute times the logits'
#: largest magnitude): the network's own resize reproduced, up to kernel rounding.
RESIZE_TOLERANCE = 1e-5


def resize(values: Tensor, size: Sequence[int], mode: str) -> Tensor:
    """``values`` [N, C, *spatial] resized to [N, C, *size] as ``mode`` says.

    Args:
        values: a float tensor with 1 to 3 spatial dimensions.
        size: the spatial size wanted, one entry per spatial dimension.
        mode: one of `RESIZE_MODES`.

    Returns:
        The resized tensor, ``values``' dtype: each output element a convex combination of
        ``values``' elements of its (N, C) plane.

    Raises:
        ValueError: an unknown mode, or not 1 to 3 spatial dimensions.
    """
    spatial = values.dim() - 2
    if spatial not in _LINEAR_MODES:
        raise ValueError(f"resize needs 1 to 3 spatial dimensions, got shape {tuple(values.shape)}")
    if mode in ("bilinear", "bilinear_align_corners"):
        corners = mode == "bilinear_align_corners"
        return F.interpolate(
            values, tuple(size), mode=_LINEAR_MODES[spatial], align_corners=corners
        )
    if mode in ("nearest", "nearest-exact"):
        return F.interpolate(values, tuple(size), mode=mode)
    raise ValueError(f"resize mode must be one of {list(RESIZE_MODES)}, got {mode!r}")


def logits_resize(output: Tensor, logits: Tensor) -> str | None:
    """How a last layer's ``output`` [N, C, *S] becomes the model's ``logits`` [N, C, *S'] (1 to
    3 spatial dimensions; any float dtypes: ``output`` is compared in ``logits``' dtype).

    Returns:
        ``"identity"`` when they are equal (an exact match); else the first of `RESIZE_MODES`
        whose resize of ``output`` to the logits' spatial size is within `RESIZE_TOLERANCE` of
        ``logits`` (`torch.allclose`); None when neither holds (other shapes, another resize,
        anything after the layer but a resize).
    """
    if output.shape == logits.shape:
        return "identity" if torch.equal(output, logits) else None
    if output.dim() != logits.dim() or output.shape[:2] != logits.shape[:2] or output.dim() < 3:
        return None
    if output.dim() - 2 not in _LINEAR_MODES:
        return None
    output = output.to(logits.dtype)  # a half-precision layer before float logits compares too
    scale = float(logits.detach().abs().max()) if logits.numel() else 0.0
    tolerance = RESIZE_TOLERANCE * max(scale, 1.0)
    for mode in RESIZE_MODES:
        resized = resize(output.detach(), logits.shape[2:], mode)
        if torch.allclose(resized, logits.detach(), rtol=RESIZE_TOLERANCE, atol=tolerance):
            return mode
    return None


def find_last_layer(model: nn.Module, batch: Any, io: ModelIO) -> str:
    """The name of the Linear/Conv/ConvTranspose module whose output gives ``model``'s logits,
    found by one forward pass of ``batch`` in eval mode (registration order says nothing about
    which layer comes last in ``forward``).

    A module whose output IS the logits is preferred (the last such one); else the last whose
    output, resized by one of `RESIZE_MODES`, equals them (`logits_resize`: a segmentation
    network's classifier before its upsampling).

    Args:
        model: the network (wrappers such as DDP are looked through: the name returned is the
            network's own, `tradi.plumbing.structure.named_modules`).
        batch: one batch as the loader yields it; ``io.inputs(batch)`` goes to the model's
            device.
        io: how a batch becomes inputs and the output becomes logits (`tradi.ModelIO`).

    Returns:
        The module's name, e.g. ``"head"`` or ``"classifier.4"``.

    Raises:
        ValueError: the model has no such module, or none whose output gives the logits.
    """
    candidates = {name: m for name, m in named_modules(model) if isinstance(m, LAYER_TYPES)}
    if not candidates:
        raise ValueError(
            "last_layer='auto' found no Linear/Conv/ConvTranspose module: name the layer whose "
            "output is the logits, or pass last_layer=None with link='mc'"
        )
    outputs, logits = _layer_outputs(model, candidates, batch, io)
    found = [name for name, out in outputs.items() if out is logits]
    if not found:
        found = [name for name, out in outputs.items() if logits_resize(out, logits) is not None]
    if not found:
        raise ValueError(
            "last_layer='auto' found no Linear/Conv/ConvTranspose module whose output is the "
            f"model's logits, or gives them by a resize to their size ({', '.join(RESIZE_MODES)}; "
            "F.interpolate(size=...) or an exact scale_factor) (after it: a "
            f"log-softmax, a pooling, ...; layers: {list(candidates)[-5:]}): name the layer "
            "whose output is the logits, or pass last_layer=None with link='mc' to linearize "
            "the whole network"
        )
    return found[-1]


def _layer_outputs(
    model: nn.Module, candidates: dict[str, nn.Module], batch: Any, io: ModelIO
) -> tuple[dict[str, Tensor], Tensor]:
    """Each candidate's last output in one eval-mode forward pass of ``batch``, in the order
    they last ran, and the model's logits."""
    outputs: dict[str, Tensor] = {}

    def keep(name: str, output: Tensor) -> None:
        outputs.pop(name, None)  # a module called twice counts where it ran last
        outputs[name] = output

    handles = [
        module.register_forward_hook(lambda m, args, out, name=name: keep(name, out))
        for name, module in candidates.items()
    ]
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), eval_mode(model):
            logits = io.logits(io.forward(model, to_device(io.inputs(batch), device)))
    finally:
        for handle in handles:
            handle.remove()
    return outputs, logits


def check_last_layer(model: nn.Module, name: str) -> None:
    """Raise ValueError unless ``name`` is a Linear/Conv/ConvTranspose module of ``model`` (its
    own names: wrappers such as DDP or DataParallel removed, `tradi.plumbing.structure`)."""
    modules = dict(named_modules(model))
    if name not in modules:
        layers = [n for n, m in modules.items() if isinstance(m, LAYER_TYPES)][-5:]
        raise ValueError(
            f"last_layer {name!r} is not a module of the model (its own names, wrappers "
            f"removed; its last Linear/Conv layers: {layers})"
        )
    if not isinstance(modules[name], LAYER_TYPES):
        raise ValueError(
            f"last_layer {name!r} is a {type(modules[name]).__name__}: the closed form and the "
            "linearized last layer need a Linear, Conv or ConvTranspose module"
        )
