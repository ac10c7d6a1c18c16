"""One interface for every method of the paper's tables, so one runner compares them fairly.

A method is built from a model factory, its options and the shared `TrainConfig`; it trains
through `tradi.training.fit` (methods differ by callbacks, never by copies of the loop) and
predicts per-sample logits and probabilities [S, N, C] (dense: [S, N, C, H, W]), S being its
number of forward passes per input, so that every OOD score of `tradi.metrics.OOD_SCORES` can be
computed from its outputs. The methods that sample weight sets from a posterior share
`tradi.methods.sampling.SamplingMethod`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tradi.distributed import data_parallel
from tradi.plumbing.adapters import DEFAULT_IO, ModelIO, to_device
from tradi.plumbing.loaders import loader_generators
from tradi.plumbing.structure import has_uninitialised_parameters, unwrap
from tradi.selection.rules import ScaleSearch
from tradi.training import Callback, FitResult, TrainConfig, fit, make_optimizer, make_scheduler
from tradi.training.hooks import LossFn, Scheduler

ModelFactory = Callable[[], nn.Module]
#: What a method predicts per forward pass: logits, or softmax probabilities.
OutputKind = Literal["logits", "probs"]


@dataclass
class FitInfo:
    """What training a method cost and chose.

    ``train_seconds`` sums the wall-clock time of every training run (all members for an
    ensemble); ``selection_seconds`` is the time spent choosing a noise scale on validation data,
    reported apart so that it can be added or not.
    """

    train_seconds: float
    runs: list[FitResult]
    selection_seconds: float = 0.0
    scale_search: ScaleSearch | None = None


def batch_inputs(batch: Any, io: ModelIO = DEFAULT_IO) -> Any:
    """The model inputs of a batch as ``io`` reads them (`ModelIO.inputs`)."""
    return io.inputs(batch)


class Method(ABC):
    """Base class: the shared training path, prediction over loaders and option checking.

    Subclasses set ``name``, ``label`` (its row in the tables), ``short_label`` (figure panels)
    and ``options_type``, and implement ``sample_logits`` (or, for a method that has no logits,
    ``sample_probs`` alone: `gives_logits` is then False) and ``forward_passes_per_input``; they change training only through ``_callbacks``,
    ``_optimizer``, ``_scheduler`` and ``_after_fit``, and extend ``state_dict``/``load_state_dict`` with what they add.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    short_label: ClassVar[str]
    options_type: ClassVar[type]
    #: Bumped when a change makes this method's earlier results another experiment (Deep
    #: Ensembles' member seeds, issue 19): a resumed run retrains pairs of another version.
    version: ClassVar[int] = 1

    def __init__(
        self,
        model_factory: ModelFactory,
        options: Any = None,
        *,
        train: TrainConfig | None = None,
        loss_fn: LossFn = F.cross_entropy,
        io: ModelIO = DEFAULT_IO,
    ) -> None:
        options = self.options_type() if options is None else options
        if not isinstance(options, self.options_type):
            raise TypeError(
                f"{self.name} takes {self.options_type.__name__} options, got {type(options).__name__}"
            )
        self.model_factory = model_factory
        self.options = options
        self.train = train or TrainConfig()
        self.loss_fn = loss_fn
        self.io = io
        self.device = torch.device(self.train.device)
        self.model: nn.Module | None = None
        self.fit_info: FitInfo | None = None
        #: Callbacks added to every network this method trains (logging, history files).
        self.extra_callbacks: list[Callback] = []
        self._own_callbacks: tuple[Callback, ...] = ()

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> FitInfo:
        """Train on ``train_loader``; ``val_loader`` serves model selection and noise scales.

        Test data never enters here. With ``checkpoint_dir`` an interrupted fit resumes. The
        same as ``training_callbacks``, ``train_network`` and ``adopt`` in turn, which is how
        the runner trains one network for every method of a seed that ``shares_training``.
        """
        callbacks = self.training_callbacks(val_loader)
        model, result = self.train_network(train_loader, val_loader, callbacks, checkpoint_dir)
        return self.adopt(
            model,
            result,
            train_loader,
            val_loader,
            callbacks=callbacks,
            checkpoint_dir=checkpoint_dir,
        )

    def shares_training(self) -> bool:
        """Whether this method's network is the seed's ordinary run (the model factory, seed,
        optimizer and schedule of `TrainConfig`, training changed by callbacks that only
        observe), so that one run can serve every such method of a seed (issue 12). False for
        a class that brings its own ``_optimizer`` or ``_scheduler`` (IVON); a class whose
        callbacks change training must say False too."""
        cls = type(self)
        return cls._optimizer is Method._optimizer and cls._scheduler is Method._scheduler

    def training_callbacks(self, val_loader: Iterable[Any] | None = None) -> Sequence[Callback]:
        """Check the options against ``val_loader`` (ValueError before any training) and return
        fresh callbacks this method needs on the training run; ``adopt`` reads them back."""
        self._check_fit(val_loader)
        self._own_callbacks = tuple(self._callbacks())
        return self._own_callbacks

    def train_network(
        self,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | Path | None = None,
    ) -> tuple[nn.Module, FitResult]:
        """The seed's training run (``TrainConfig.seed``) with ``callbacks`` (any methods')."""
        return self._train_network(
            self.train.seed, train_loader, val_loader, callbacks, checkpoint_dir
        )

    def adopt(
        self,
        model: nn.Module,
        result: FitResult,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None,
        *,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | Path | None = None,
    ) -> FitInfo:
        """Take ``model``, trained by ``train_network`` with ``callbacks`` (this method's own
        from ``training_callbacks`` among them), and finish fitting: read the callbacks' state,
        then the after-fit step (a noise scale, a temperature) on ``val_loader``.

        ``FitInfo.train_seconds`` charges this method the run without any callback time plus
        the time of its own callbacks (`FitResult.callback_seconds`), as measured.
        ``checkpoint_dir`` serves methods that train more networks (Deep Ensembles).
        """
        if len(callbacks) != len(result.callback_seconds):
            raise ValueError(
                f"{self.name}: adopt() got {len(callbacks)} callback(s) but the run timed "
                f"{len(result.callback_seconds)}; pass the callbacks the network trained with"
            )
        self.model = model
        own = {id(callback) for callback in self._own_callbacks}
        others = sum(
            seconds
            for callback, seconds in zip(callbacks, result.callback_seconds, strict=True)
            if id(callback) not in own
        )
        info = FitInfo(train_seconds=result.train_seconds - others, runs=[result])
        self.fit_info = self._after_fit(info, train_loader, val_loader)
        return self.fit_info

    def _check_fit(self, val_loader: Iterable[Any] | None) -> None:
        """Fail before training when the options need something that is missing."""
        if self.train.select != "last" and val_loader is None:
            raise ValueError(f"{self.name}: select={self.train.select!r} needs a val_loader")

    def _callbacks(self) -> Sequence[Callback]:
        """The callbacks this method adds to training (none by default); kept for ``adopt``."""
        return ()

    def _after_fit(
        self, info: FitInfo, train_loader: Iterable[Any], val_loader: Iterable[Any] | None
    ) -> FitInfo:
        return info

    def _train_network(
        self,
        seed: int,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None,
        callbacks: Sequence[Callback],
        checkpoint_dir: str | Path | None,
    ) -> tuple[nn.Module, FitResult]:
        """Build a network from ``seed`` and train it with the shared loop and config.

        The seed fixes the initial weights, dropout masks and shuffling (the global torch state
        and the training loader's own generators), so a run depends on ``seed`` alone. Lazy
        layers are initialised first by `_dry_run`. In a
        distributed run the network trains as `DistributedDataParallel` (`data_parallel`) and is
        returned plain.
        """
        torch.manual_seed(seed)
        model = self.model_factory().to(self.device)
        if has_uninitialised_parameters(model):
            self._dry_run(model, train_loader)
        for generator in loader_generators(train_loader):
            generator.manual_seed(seed)
        optimizer = self._optimizer(model)
        with data_parallel(model) as trained:
            result = fit(
                trained,
                train_loader,
                optimizer=optimizer,
                scheduler=self._scheduler(optimizer),
                epochs=self.train.epochs,
                loss_fn=self.loss_fn,
                val_loader=val_loader,
                select=self.train.select,
                callbacks=[*callbacks, *self.extra_callbacks],
                progress=self.train.progress,
                device=self.device,
                checkpoint_dir=checkpoint_dir,
                io=self.io,
            )
        return model, result

    @torch.no_grad()
    def _dry_run(self, model: nn.Module, loader: Iterable[Any]) -> None:
        """Initialise lazy layers (`nn.LazyLinear`, ...) with one eval-mode pass of a batch,
        before the optimizer, tracker or SWAG collector sees the parameters."""
        batch = next(iter(loader))
        model.eval()
        self.io.forward(model, to_device(self.io.inputs(batch), self.device))
        model.train()

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The shared optimizer of ``TrainConfig`` (IVON brings its own)."""
        return make_optimizer(model, self.train)

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> Scheduler | None:
        """The shared learning-rate schedule of ``TrainConfig``."""
        return make_scheduler(optimizer, self.train)

    def _built_model(self) -> nn.Module:
        """A fresh network from the factory, for ``load_state_dict``."""
        return self.model_factory().to(self.device)

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit() or load_state_dict() first")
        return self.model

    # ------------------------------------------------------------------ prediction
    @property
    @abstractmethod
    def forward_passes_per_input(self) -> int:
        """How many network evaluations one test input costs."""

    @property
    def scale_in_use(self) -> float | None:
        """The noise scale the method predicts with (None: a method without one); recorded in
        each result row."""
        return None

    def sample_logits(self, x: Any) -> Tensor:
        """Per-sample logits [S, N, C, ...] for one batch of inputs: what each of the S forward
        passes (weight set, member, dropout pass) gives before its softmax.

        Raises NotImplementedError for a method that gives probabilities only (`gives_logits`
        False): its OOD scores that need logits (logit, energy, ensemble_energy) are left out."""
        raise NotImplementedError(
            f"{self.name} gives probabilities only (sample_probs): it has no logits; use "
            "sample_probs, or the OOD scores that need no logits "
            "(tradi.metrics.available_scores(False))"
        )

    @property
    def gives_logits(self) -> bool:
        """Whether ``sample_logits`` is implemented (every built-in method: True)."""
        return type(self).sample_logits is not Method.sample_logits

    def sample_probs(self, x: Any) -> Tensor:
        """Per-sample class probabilities [S, N, C, ...] for one batch of inputs: the softmax
        (over dim 2) of ``sample_logits``; a method without logits overrides this."""
        if not self.gives_logits:
            raise NotImplementedError(
                f"{type(self).__name__} must implement sample_logits or sample_probs"
            )
        return self.sample_logits(x).softmax(dim=2)

    def iter_outputs(self, loader: Iterable[Any], kind: OutputKind = "probs") -> Iterator[Tensor]:
        """``sample_logits`` (kind "logits") or ``sample_probs`` (kind "probs") batch by batch,
        on the CPU: for dense outputs too big to concatenate. Each batch runs in
        ``_batch_context(index)`` (MC Dropout seeds its masks there)."""
        if kind not in ("logits", "probs"):
            raise ValueError(f"kind must be 'logits' or 'probs', got {kind!r}")
        sample = self.sample_logits if kind == "logits" else self.sample_probs
        for index, batch in enumerate(loader):
            with self._batch_context(index):
                outputs = sample(self.io.inputs(batch))
            yield outputs.cpu()

    def iter_predict(self, loader: Iterable[Any]) -> Iterator[Tensor]:
        """``sample_probs`` batch by batch, on the CPU (`iter_outputs` with kind "probs")."""
        return self.iter_outputs(loader, "probs")

    def _batch_context(self, index: int) -> AbstractContextManager[object]:
        """The context batch ``index`` of `iter_outputs` predicts in (none by default)."""
        return nullcontext()

    def predict(self, loader: Iterable[Any]) -> Tensor:
        """Per-sample probabilities over a loader: [S, N, C, ...] on the CPU."""
        return torch.cat(list(self.iter_predict(loader)), dim=1)

    def _network_logits(self, model: nn.Module, x: Any) -> Tensor:
        """Logits [N, C, ...] of one network on model inputs ``x`` (read through ``io``)."""
        return self.io.logits(self.io.forward(model, to_device(x, self.device)))

    def _network_probs(self, model: nn.Module, x: Any) -> Tensor:
        """Class probabilities [N, C, ...] of one network on model inputs ``x`` (via ``io``)."""
        return self._network_logits(model, x).softmax(dim=1)

    def predict_mean(self, x: Tensor) -> Tensor:
        """The method's predictive distribution for one batch: the mean over its S passes."""
        return self.sample_probs(x).mean(dim=0)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to predict again without training (here: the trained network)."""
        return {"model": unwrap(self._require_model()).state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the trained method from ``state_dict()``'s output (the network's own names:
        states move between a wrapped and a plain model factory)."""
        model = self._built_model()
        unwrap(model).load_state_dict(state["model"])
        self.model = model
