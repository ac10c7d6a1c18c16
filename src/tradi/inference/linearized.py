"""The linearized (GLM) predictive of a Gaussian weight posterior (Immer et al. 2021, AISTATS).

The network is linearized at its trained weights w*:

    f_lin(x; w) = f(x; w*) + J(x) (w - mu),      J(x) = d f(x; w) / d w at w*,

with w ~ N(mu, Sigma) the posterior (TRADI's tracked Gaussian, SWAG's, ...). The logits are then
exactly Gaussian: mean f(x; w*), the trained network's own logits, and covariance J Sigma J^T.
Accuracy follows the trained network's logits (only the spread around them changes), and no
BatchNorm statistics need re-estimating: every weight set is evaluated at w*'s statistics.

Three ways to get the class probabilities (``link``):

- ``"mc"``: logit draws f(x; w*) + J(x) (w~_s - mu) for posterior samples w~_s, one
  Jacobian-vector product each (`torch.func.jvp`), softmax per draw, averaged. Exact in
  distribution for any posterior that samples (diagonal, kernel, SWAG's low rank).
- ``"probit"``: the probit (mean-field) approximation of E[softmax(z)], z ~ N(m, diag(v)):
  softmax(m / sqrt(1 + pi/8 v)) (MacKay 1992; Lu et al. 2020; the "probit" link of
  aleximmer/Laplace). Closed form: it needs the logits' variances, which ``last_layer`` gives.
  Classes of different variances are tempered differently, so the arg-max may move.
- ``"probit_shared"``: the same with ONE variance per input (per pixel), the mean over classes
  vbar = mean_c v_c: softmax(m / sqrt(1 + pi/8 vbar)). A per-input temperature >= 1, so the
  arg-max is the network's exactly, at any scale; confidence falls where the last layer's spread
  is large. One variance per input is SNGP's mean-field logits (Liu et al. 2020, with the
  probit factor pi/8 of MacKay 1992); same cost as ``"probit"``.

``last_layer``: only that module's weights are sampled (the others stay at w*). The layer is
linear in its weights, so the linearization is exact there: for a diagonal posterior the logits'
variance is the layer applied to the squared input with the weights' variances (each output sums
h_j W_j over distinct weights, so var = sum_j h_j^2 sigma_j^2; Kristiadi et al. 2020), one extra
call of the layer; for any other posterior, ``"mc"`` draws the layer's weight offsets, one call
of the layer each, with the trunk run once.

A last layer followed by a spatial resize (a segmentation network's classifier, then bilinear
upsampling to the input size: PSPNet, DeepLab, FCN) is accepted when the resize is one of
`tradi.inference.last_layer.RESIZE_MODES` and is detected on every call by comparing the resized
layer output with the logits, never assumed. The mean stays the network's own output (resized by
the network itself); the ``"mc"`` draws add the resized offsets (the resize is linear, so this
is still exact); the closed form's variance is the layer-resolution variance resized with the
same weights: an UPPER BOUND of the resized logits' variance. Each output pixel is
sum_i a_i z_i with a_i >= 0 and sum_i a_i = 1, the z_i correlated (they share the layer's
weights), and

    Var(sum_i a_i z_i) <= (sum_i a_i sd_i)^2 <= sum_i a_i Var(z_i)

(Cauchy-Schwarz, |Cov(z_i, z_j)| <= sd_i sd_j; then Jensen, the a_i being weights of a mean):
the resized variance never understates the spread, and equals it where one a_i is 1 (nearest
neighbour everywhere; bilinear at the pixels that coincide with a layer pixel). The exact
variance would need the cross-pixel covariances.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from tradi.inference.last_layer import LAYER_TYPES, RESIZE_MODES, logits_resize, resize
from tradi.inference.weight_sets import sample_seeds
from tradi.plumbing.adapters import DEFAULT_IO, ModelIO, to_device
from tradi.plumbing.structure import evaluation_copy, own_names
from tradi.posterior import DiagonalGaussian, WeightPosterior

Link = Literal["mc", "probit", "probit_shared"]

#: The links with a closed form (a diagonal posterior on ``last_layer``; no sampling).
CLOSED_FORM_LINKS: tuple[str, ...] = ("probit", "probit_shared")

#: The probit approximation's factor: E[sigmoid(z)] ~ sigmoid(m / sqrt(1 + pi/8 v)).
PROBIT_FACTOR = math.pi / 8.0


def probit_softmax(
    mean: Tensor, variance: Tensor, class_dim: int = 1, *, shared: bool = False
) -> Tensor:
    """The probit approximation of E[softmax(z)], z ~ N(mean, diag(variance)).

    softmax(m / sqrt(1 + pi/8 v)), per class; with ``shared``, one variance per input (per
    pixel), the mean over ``class_dim``: softmax(m / sqrt(1 + pi/8 mean_c v_c)), a per-input
    temperature >= 1 that keeps arg-max softmax(m) exactly (in floating point, up to ties where
    a huge temperature rounds two probabilities to one value).

    Args:
        mean: logit means, e.g. [N, C] or [N, C, H, W] (float).
        variance: logit variances, the same shape, >= 0.
        class_dim: the class dimension.
        shared: one variance per input, the classes' mean (``link="probit_shared"``).

    Returns:
        Probabilities of ``mean``'s shape and dtype, summing to 1 along ``class_dim``.

    Raises:
        ValueError: shapes differ.

    Source: MacKay 1992 (the probit factor pi/8); Lu, Ie & Sha 2020, "Mean-field approximation
    to Gaussian-softmax integral with application to uncertainty estimation" (the per-class
    "mean-field" softmax); one variance per input as in SNGP (Liu et al. 2020).
    """
    if mean.shape != variance.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and variance {tuple(variance.shape)} differ")
    if shared:
        variance = variance.mean(dim=class_dim, keepdim=True)
    return torch.softmax(mean / torch.sqrt(1.0 + PROBIT_FACTOR * variance), dim=class_dim)


class LinearizedEnsemble:
    """The linearized (GLM) predictive of `posterior` around `model`'s trained weights.

    Args:
        model: the trained network (copied in eval mode; the original is never modified). Its
            own weights are w*, the point of linearization, and its logits the predictive mean.
        posterior: a Gaussian posterior with a ``mean`` dict {name: tensor} (named as
            `tradi.plumbing.structure` names parameters) and ``sample(generator)``:
            `DiagonalGaussian`, `KernelGaussian`, `SWAGPosterior`, ...
        n_samples: logit draws of ``link="mc"`` (ignored by the closed forms).
        link: ``"mc"``, ``"probit"`` or ``"probit_shared"`` (module docstring); the two closed
            forms need ``last_layer`` and a `DiagonalGaussian`; ``"probit_shared"`` keeps the
            network's arg-max exactly.
        last_layer: the name of the module whose output is the model's logits (e.g. ``"fc"``),
            or gives them by a resize (a segmentation classifier before its upsampling: module
            docstring), to sample that layer alone; None linearizes every parameter the
            posterior holds.
        seed: the draws are a deterministic function of ``seed``.
        io: how batches become inputs and outputs become logits (`tradi.ModelIO`).

    Raises:
        ValueError: n_samples < 1, an unknown link (the message lists them), a closed-form link
            without ``last_layer`` or a diagonal posterior, a posterior without ``mean``, names the model lacks, or a
            ``last_layer`` that is not a Linear/Conv/ConvTranspose layer of the model.
    """

    def __init__(
        self,
        model: nn.Module,
        posterior: WeightPosterior,
        n_samples: int = 20,
        *,
        link: Link = "mc",
        last_layer: str | None = None,
        seed: int = 0,
        io: ModelIO = DEFAULT_IO,
    ) -> None:
        _check_arguments(posterior, n_samples, link, last_layer)
        self.model = evaluation_copy(model).eval()
        self.device = next(self.model.parameters()).device
        self.posterior, self.n_samples, self.link = posterior, n_samples, link
        self.last_layer, self.seed, self.io = last_layer, seed, io
        self._names = own_names(self.model)
        missing = sorted(set(posterior.mean) - set(self._names))  # type: ignore[attr-defined]
        if missing:
            raise ValueError(f"the posterior holds parameters the model lacks: {missing[:5]}")
        self._layer = None if last_layer is None else _linear_layer(self.model, last_layer)
        self._seeds = sample_seeds(n_samples, seed)  # `SampledEnsemble`'s draws for one seed

    def _offsets(self, index: int) -> dict[str, Tensor]:
        """Draw ``index``'s weight offsets w~ - mu, by the model copy's parameter names."""
        generator = torch.Generator(device=self.device).manual_seed(self._seeds[index])
        sample = self.posterior.sample(generator)
        mean = self.posterior.mean  # type: ignore[attr-defined]
        return {self._names[n]: (w - mean[n]).to(self.device) for n, w in sample.items()}

    def _network_logits(self, x: Any) -> Tensor:
        return self.io.logits(self.io.forward(self.model, x))

    @torch.no_grad()
    def logit_moments(self, x: Any) -> tuple[Tensor, Tensor]:
        """The Gaussian logits' mean and per-class variance of a diagonal last-layer posterior.

        Returns:
            (mean, variance), each [N, C, ...] float: the trained network's logits and
            sum_j h_j^2 sigma_j^2 (+ the bias variances), h the layer's input. When the network
            resizes the layer's output (a segmentation network's upsampling), the variance is
            resized with the same interpolation weights: an upper bound of the resized logits'
            variance, exact where one weight is 1 (module docstring: Cauchy-Schwarz, Jensen).

        Raises:
            ValueError: without ``last_layer``, with a posterior that is not diagonal, or a
                layer whose output gives the logits neither as they are nor by a resize of
                `tradi.inference.last_layer.RESIZE_MODES`.
        """
        if self._layer is None or not isinstance(self.posterior, DiagonalGaussian):
            raise ValueError("closed-form logit moments need last_layer and a DiagonalGaussian")
        call, logits, mode = self._trunk(to_device(x, self.device))
        variances = {
            key: self.posterior.std[f"{self.last_layer}.{key}"].to(self.device) ** 2
            for key in ("weight", "bias")
            if f"{self.last_layer}.{key}" in self.posterior.std
        }
        return logits, self._as_logits(
            self._layer_with(variances, call, squared=True), logits, mode
        )

    def _trunk(self, x: Any) -> tuple[tuple[tuple[Any, ...], dict[str, Any]], Tensor, str]:
        """The last layer's call (its arguments, e.g. a transposed convolution's
        ``output_size``), the model's logits and how the layer's output becomes them
        (``"identity"`` or one of `RESIZE_MODES`: `logits_resize`), from one forward pass."""
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        outputs: list[Tensor] = []
        layer = self._layer
        assert layer is not None
        handles = [
            layer.register_forward_pre_hook(
                lambda module, args, kwargs: calls.append((args, kwargs)), with_kwargs=True
            ),
            layer.register_forward_hook(lambda module, args, output: outputs.append(output)),
        ]
        try:
            logits = self._network_logits(x)
        finally:
            for handle in handles:
                handle.remove()
        mode = logits_resize(outputs[0], logits) if len(outputs) == 1 else None
        if mode is None:
            raise ValueError(
                f"last_layer {self.last_layer!r} must be called once and give the model's "
                f"logits, or give them by a resize ({', '.join(RESIZE_MODES)}); use "
                "last_layer=None to linearize the whole network"
            )
        return calls[0], logits, mode

    @staticmethod
    def _as_logits(values: Tensor, logits: Tensor, mode: str) -> Tensor:
        """The layer-resolution ``values`` mapped as the network maps its layer's output."""
        return values if mode == "identity" else resize(values, logits.shape[2:], mode)

    def _layer_with(
        self,
        params: dict[str, Tensor],
        call: tuple[tuple[Any, ...], dict[str, Any]],
        squared: bool = False,
    ) -> Tensor:
        """The last layer called as in the forward pass with ``params`` (missing ones 0) in
        place of its own, on its input (squared: the variance propagation)."""
        layer = self._layer
        assert layer is not None
        args, kwargs = call
        first = args[0] ** 2 if squared else args[0]
        zeroed = {key: torch.zeros_like(p) for key, p in layer.named_parameters()}
        return functional_call(layer, {**zeroed, **params}, (first, *args[1:]), kwargs)

    @torch.no_grad()
    def sample_logits(self, x: Any) -> Tensor:
        """Draws of the linearized logits, [n_samples, N, C, ...] (``link="mc"``'s draws)."""
        x = to_device(x, self.device)
        if self._layer is not None:
            call, logits, mode = self._trunk(x)
            prefix = f"{self.last_layer}."
            draws = []
            for index in range(self.n_samples):
                offsets = self._offsets(index)
                layer = {k[len(prefix) :]: v for k, v in offsets.items() if k.startswith(prefix)}
                draws.append(logits + self._as_logits(self._layer_with(layer, call), logits, mode))
            return torch.stack(draws)
        return self._full_jvp_draws(x)

    def _full_jvp_draws(self, x: Any) -> Tensor:
        """f(x; w*) + J(x) delta_s for each draw: one Jacobian-vector product per draw."""
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        tracked = sorted(set(self._names[n] for n in self.posterior.mean))  # type: ignore[attr-defined]

        def logits_of(*values: Tensor) -> Tensor:
            weights = {**params, **dict(zip(tracked, values, strict=True))}
            return self.io.logits(self.io.functional_forward(self.model, weights, x))

        primals = tuple(params[n] for n in tracked)
        draws = []
        for index in range(self.n_samples):
            offsets = self._offsets(index)
            tangents = tuple(offsets[n].to(params[n].dtype) for n in tracked)
            mean, direction = jvp(logits_of, primals, tangents)
            draws.append(mean + direction)
        return torch.stack(draws)

    def sample_probs(self, x: Any) -> Tensor:
        """Softmax of each logit draw, [n_samples, N, C, ...] (``link="mc"``)."""
        return self.sample_logits(x).softmax(dim=2)

    def __call__(self, x: Any) -> Tensor:
        """The predictive class probabilities [N, C, ...] (float)."""
        if self.link in CLOSED_FORM_LINKS:
            return probit_softmax(*self.logit_moments(x), shared=self.link == "probit_shared")
        return self.sample_probs(x).mean(dim=0)

    def predict(self, loader: Iterable[Any]) -> Tensor:
        """Probabilities over a loader, [N, C, ...] on the CPU."""
        return torch.cat([self(self.io.inputs(batch)).cpu() for batch in loader])


def _check_arguments(
    posterior: WeightPosterior, n_samples: int, link: str, last_layer: str | None
) -> None:
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if link not in get_args(Link):
        raise ValueError(f"link must be one of {list(get_args(Link))}, got {link!r}")
    if not isinstance(getattr(posterior, "mean", None), dict):
        raise ValueError(
            f"{type(posterior).__name__} has no `mean` dict: the linearized predictive needs the "
            "posterior's mean to turn samples into offsets"
        )
    if link in CLOSED_FORM_LINKS and (
        last_layer is None or not isinstance(posterior, DiagonalGaussian)
    ):
        raise ValueError(
            f"link={link!r} needs last_layer and a DiagonalGaussian (closed-form variances); "
            "use link='mc' otherwise"
        )


def _linear_layer(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise ValueError(f"last_layer {name!r} is not a module of the model")
    layer = modules[name]
    if not isinstance(layer, LAYER_TYPES):
        raise ValueError(
            f"last_layer {name!r} is a {type(layer).__name__}; it must be one of "
            f"{[c.__name__ for c in LAYER_TYPES]}"
        )
    return layer
