"""Ensemble inference (issue 6): the cost of a 20-sample prediction, and each method's train and
test time relative to the MCP baseline on mnist-notmnist.

- ensemble_cost_*: one 20-sample `SampledEnsemble` prediction over 20 plain forward passes of
  the same model on the same 1000 inputs, vmap against the loop, interleaved in one process;
  peak memory is the most memory allocated at once during one call (torch profiler events).
- method_times_mnist_notmnist: every method trained and tested one after the other in this
  process on the real data (TRADI_DATA_DIR), with the paper's MLP recipe on a subset of the
  training set for a few epochs; CPU times are divided by MCP's, which is measured first and
  last and averaged. Testing covers MNIST-test and notMNIST (20,000 images); building a
  sampled ensemble (drawing weights, BatchNorm re-estimation per sample on the training
  subset) is reported apart, as it happens once per trained model.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, TensorDataset

import tradi
from benchmarks.common import Result, interleaved
from tradi.models import build_model

N_SAMPLES = 20
BATCH = 1000
INPUT_SHAPE = (1, 28, 28)
# the method timings train on a subset for a few epochs: ratios of per-epoch costs, in minutes
METHOD_EPOCHS = 2
METHOD_TRAIN_IMAGES = 12_800


def _ensemble_setup(
    model_name: str, batching: str, chunk_size: int | None
) -> tuple[torch.nn.Module, tradi.SampledEnsemble, torch.Tensor]:
    """A model, its 20-sample ensemble (TRADI's diagonal posterior) and 1000 inputs."""
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, input_shape=INPUT_SHAPE).eval()
    tracker = tradi.WeightTracker(model, init_mean="weights", init_variance=1e-4)
    ensemble = tradi.SampledEnsemble(
        model,
        tracker.posterior("diag"),
        N_SAMPLES,
        batching=batching,  # type: ignore[arg-type]
        chunk_size=chunk_size,
    )
    return model, ensemble, torch.randn(BATCH, *INPUT_SHAPE)


def _plain_passes(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        for _ in range(N_SAMPLES):
            model(x)


def peak_allocated_mib(fn: Callable[[], object]) -> float:
    """Peak of the CPU memory allocated by `fn` and still live, from the profiler's allocation
    events (each op's own allocations, and frees, in time order)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def ensemble_cost(model_name: str) -> Result:
    configs: dict[str, tuple[str, int | None]] = {
        "plain_20_passes": ("plain", None),
        "vmap_all_20": ("vmap", None),
        "vmap_chunk_8": ("vmap", 8),  # the default
        "loop": ("loop", None),
    }
    fns: dict[str, Callable[[], None]] = {}
    for name, (mode, chunk_size) in configs.items():
        model, ensemble, x = _ensemble_setup(
            model_name, "loop" if mode == "plain" else mode, chunk_size
        )
        fns[name] = (
            (lambda m=model, x=x: _plain_passes(m, x))
            if mode == "plain"
            else (lambda e=ensemble, x=x: e(x))
        )
    steps, rounds = (3, 7) if model_name == "mlp" else (1, 5)
    seconds = interleaved(fns, steps, rounds)
    peaks = {name: peak_allocated_mib(fn) for name, fn in fns.items()}
    plain = seconds["plain_20_passes"]
    return {
        "model": model_name,
        "inputs": BATCH,
        "n_samples": N_SAMPLES,
        "ms": {name: 1e3 * s for name, s in seconds.items()},
        "ratio_to_20_plain_passes": {name: s / plain for name, s in seconds.items()},
        "vmap_over_loop": seconds["vmap_chunk_8"] / seconds["loop"],
        "peak_memory_mib": peaks,
    }


# ---------------------------------------------------------------------- methods on mnist-notmnist
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    # noise scales fixed (the defaults where there is one) so that no validation search is timed
    "mc_dropout": {},
    "deep_ensembles": {},
    "swag": {"start_epoch": 0},
    "gaussian_perturbation": {"scale": 0.1},
    "tradi": {"scale": 1.0},
}


class _Clock:
    """Wall-clock and CPU time of a block. CPU time (all threads of this process) is what the
    ratios use: on a shared machine other processes' load inflates wall-clock time unevenly."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _timed_method(name: str, benchmark: Any, options: dict[str, Any]) -> dict[str, float]:
    from tradi.methods import build_method

    train = benchmark.train.subset(torch.arange(METHOD_TRAIN_IMAGES))
    train_loader = DataLoader(train, 128, shuffle=True, generator=torch.Generator().manual_seed(0))
    test_loaders = [DataLoader(benchmark.test, 1000), DataLoader(benchmark.ood_test, 1000)]
    method = build_method(
        name,
        lambda: build_model("mlp", benchmark.num_classes, benchmark.input_shape),
        train={
            "epochs": METHOD_EPOCHS,
            "optimizer": "adam",
            "lr": 1e-3,
            "weight_decay": 1e-2,
            "scheduler": "step",
            "step_size": 10,
            "gamma": 0.1,
            "progress": False,
        },
        **options,
    )
    with _Clock() as fit_clock:
        method.fit(train_loader)
    with _Clock() as first:  # the first prediction also builds a sampled ensemble
        for loader in test_loaders:
            method.predict(loader)
    with _Clock() as test:
        for loader in test_loaders:
            method.predict(loader)
    return {
        "train_cpu_s": fit_clock.cpu,
        "train_wall_s": fit_clock.wall,
        "test_cpu_s": test.cpu,
        "test_wall_s": test.wall,
        "ensemble_build_cpu_s": max(first.cpu - test.cpu, 0.0),
        "forward_passes_per_input": method.forward_passes_per_input,
    }


def method_times() -> Result:
    from tradi.data.benchmarks import load_benchmark

    if not os.environ.get("TRADI_DATA_DIR"):
        return {"skipped": "TRADI_DATA_DIR is not set (the Makefile sets it)"}
    benchmark = load_benchmark("mnist-notmnist")
    mcp_first = _timed_method("mcp", benchmark, {})
    rows = {name: _timed_method(name, benchmark, opts) for name, opts in METHOD_OPTIONS.items()}
    mcp_last = _timed_method("mcp", benchmark, {})
    rows["mcp"] = {
        key: (value + mcp_last[key]) / 2 if key.endswith("_s") else value
        for key, value in mcp_first.items()
    }
    mcp = rows["mcp"]
    return {
        "benchmark": "mnist-notmnist",
        "model": "mlp (paper recipe: Adam 1e-3, wd 1e-2, StepLR(10, 0.1), batch 128)",
        "epochs": METHOD_EPOCHS,
        "train_images": METHOD_TRAIN_IMAGES,
        "test_inputs": len(benchmark.test) + len(benchmark.ood_test),
        "ratios_from": "CPU time of this process (wall-clock is reported beside it)",
        "mcp_train_cpu_s_first_and_last": [mcp_first["train_cpu_s"], mcp_last["train_cpu_s"]],
        "methods": {
            name: {
                **rows[name],
                "train_vs_mcp": rows[name]["train_cpu_s"] / mcp["train_cpu_s"],
                "test_vs_mcp": rows[name]["test_cpu_s"] / mcp["test_cpu_s"],
                "test_with_build_vs_mcp": (
                    rows[name]["test_cpu_s"] + rows[name]["ensemble_build_cpu_s"]
                )
                / mcp["test_cpu_s"],
            }
            for name in ("mcp", *METHOD_OPTIONS)
        },
    }


# ------------------------------------------------------------- last layer only (sample_modules)
#: model -> (its last layer, input shape, inputs per call): LeNet-5 on 1000 MNIST-sized inputs,
#: ENet on 10 CamVid images at 90 x 120 (camvid-ood's evaluation batch).
LAST_LAYERS = {
    "lenet5": ("classifier.7", (1, 28, 28), 1000),
    "enet": ("classifier", (3, 90, 120), 10),
}


def _sampled_call(
    model: torch.nn.Module, module: str, x: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments the sampled module is called with in one forward pass of `model` on `x`."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def hook(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append((args, kwargs))

    handle = dict(model.named_modules())[module].register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def last_layer_cost(model_name: str) -> Result:
    """A 20-sample ensemble of the last layer alone (``sample_modules``) over ONE forward pass.

    One thread (as the mnist-notmnist and camvid-ood configs run), interleaved in one process;
    CPU time of the thread (the shared machine's other processes take turns on the cores, which
    inflates wall-clock time unevenly). Both sides return probabilities: the ensemble averages
    20 softmaxes (eq. 6), the single pass takes one. Beside it: the logits alone, vmap instead
    of the loop, the full 20-sample ensemble (every layer sampled) for scale, and a breakdown:
    the trunk alone (the network up to the sampled module, no hooks), its recording, the
    sampled module's 20 calls alone on its recorded input, and the 20 softmaxes' average alone.
    """
    from benchmarks.bench_segmentation import one_thread

    last, shape, batch = LAST_LAYERS[model_name]
    with one_thread():
        torch.manual_seed(0)
        model = build_model(model_name, num_classes=10, input_shape=shape).eval()
        tracker = tradi.WeightTracker(model, init_mean="weights", init_variance=1e-4)
        posterior = tracker.posterior("kernel")
        x = torch.randn(batch, *shape)
        loop = tradi.SampledEnsemble(model, posterior, N_SAMPLES, sample_modules=[last])
        vmapped = tradi.SampledEnsemble(
            model, posterior, N_SAMPLES, sample_modules=[last], batching="vmap", chunk_size=None
        )
        full = tradi.SampledEnsemble(model, posterior, N_SAMPLES, batching="loop")
        fns = {
            **_ensembles(model, x, loop, vmapped, full),
            **_linearized(model, tracker, last, x),
            **_breakdown(loop, last, x),
        }
        steps, rounds = (3, 7) if model_name == "lenet5" else (1, 7)
        seconds = interleaved(fns, steps, rounds, clock=time.thread_time)  # type: ignore[arg-type]
    one = seconds["one_forward"]
    return {
        "model": f"{model_name}, {batch} inputs of {shape}, one thread",
        "sampled": last,
        "n_samples": N_SAMPLES,
        "clock": "CPU time of the thread",
        "ms": {name: 1e3 * s for name, s in seconds.items()},
        "ratio_to_one_forward": {name: s / one for name, s in seconds.items()},
        "goal": "last_layer_loop <= 1.3; last_layer_probit <= 1.3 (issue 19)",
    }


def _linearized(
    model: torch.nn.Module, tracker: tradi.WeightTracker, last: str, x: torch.Tensor
) -> dict[str, Callable[[], object]]:
    """The last layer's linearized predictive (docs/one-run.md): the closed-form probit of a
    diagonal posterior (one extra call of the layer), and 20 logit draws of the kernel one."""
    probit = tradi.LinearizedEnsemble(
        model, tracker.posterior("diag"), link="probit", last_layer=last
    )
    draws = tradi.LinearizedEnsemble(model, tracker.posterior("kernel"), N_SAMPLES, last_layer=last)
    return {"last_layer_probit": lambda: probit(x), "last_layer_linearized_mc": lambda: draws(x)}


def _ensembles(
    model: torch.nn.Module, x: torch.Tensor, *ensembles: tradi.SampledEnsemble
) -> dict[str, Callable[[], object]]:
    loop, vmapped, full = ensembles

    @torch.no_grad()
    def one_forward() -> None:
        model(x).softmax(dim=1)

    return {
        "one_forward": one_forward,
        "last_layer_loop": lambda: loop(x),
        "last_layer_loop_logits_only": lambda: loop.sample_logits(x),
        "last_layer_vmap": lambda: vmapped(x),
        "full_ensemble_loop": lambda: full(x),
    }


def _breakdown(ensemble: tradi.SampledEnsemble, last: str, x: torch.Tensor) -> dict[str, Any]:
    """Where a last-layer prediction goes: the parts timed alone."""
    from torch.func import functional_call

    model, trunk = ensemble.model, ensemble._trunk
    assert trunk is not None and ensemble._sets.cached is not None
    weight_sets = [
        {n.removeprefix(f"{last}."): w for n, w in ws.items()} for ws in ensemble._sets.cached
    ]
    module = dict(model.named_modules())[last]
    recorded = trunk.record(lambda: model(x))
    with trunk.replay(recorded):
        args, kwargs = _sampled_call(model, last, x)
    logits = ensemble.sample_logits(x)

    @torch.no_grad()
    def trunk_alone() -> None:  # no hooks but one: stops the pass at the sampled module
        with contextlib.suppress(_Stop):
            handle = module.register_forward_pre_hook(_stop)
            try:
                model(x)
            finally:
                handle.remove()

    @torch.no_grad()
    def sampled_module_20_calls() -> None:
        for weights in weight_sets:
            functional_call(module, weights, args, kwargs)

    @torch.no_grad()
    def softmax_average_20() -> None:
        total = logits[0].softmax(dim=1)
        for part in logits[1:]:
            total.add_(part.softmax(dim=1))

    return {
        "breakdown_trunk_alone": trunk_alone,
        "breakdown_trunk_record": lambda: trunk.record(lambda: model(x)),
        "breakdown_sampled_module_20_calls": sampled_module_20_calls,
        "breakdown_softmax_average_20": softmax_average_20,
    }


class _Stop(Exception):
    pass


def _stop(*_: object) -> None:
    raise _Stop


# ------------------------------------------------------------------ the one-off build (BatchNorm)
BN_LOADER_BATCHES = 100


def bn_build_mlp() -> Result:
    """CPU seconds to build a 20-sample TRADI ensemble of the paper's MLP (784-200-200-200-10,
    BatchNorm, dropout) with statistics re-estimated per sample on 100 batches of 128 inputs:
    one pass over the loader (a torch DataLoader, which collates image by image) for all the
    samples (looped: the CPU default; vmapped in chunks of 8), against one pass per sample (how it was done before, `update_bn_stats` per weight set),
    fewer batches (``bn_batches``: 30 is the default) and the last layer alone (no BatchNorm after
    it: nothing to re-estimate). One thread, interleaved, CPU time of the thread; the effect of
    fewer batches on validation metrics: benchmarks/study_bn_batches.py (docs/inference.md).
    """
    from benchmarks.bench_segmentation import one_thread

    with one_thread():
        torch.manual_seed(0)
        model = build_model("mlp", num_classes=10, input_shape=INPUT_SHAPE).eval()
        tracker = tradi.WeightTracker(model, init_mean="weights", init_variance=1e-4)
        posterior = tracker.posterior("kernel")
        images = torch.randn(128 * BN_LOADER_BATCHES, *INPUT_SHAPE)
        loader = DataLoader(TensorDataset(images), batch_size=128)  # collates image by image
        variants: dict[str, dict[str, Any]] = {
            "all_100_one_pass_loop": {"batching": "loop", "bn_batches": None},
            "all_100_one_pass_vmap_chunk_8": {"batching": "vmap", "bn_batches": None},
            "bn_batches_30_default": {},
            "bn_batches_10": {"bn_batches": 10},
            "last_layer_only": {"sample_modules": ["layers.12"]},
        }
        fns: dict[str, Callable[[], object]] = {
            name: lambda o=options: tradi.SampledEnsemble(  # type: ignore[misc]
                model, posterior, N_SAMPLES, bn_loader=loader, **o
            )
            for name, options in variants.items()
        }
        fns["all_100_pass_per_sample_before"] = lambda: _pass_per_sample(model, posterior, loader)
        seconds = interleaved(fns, 1, 3, clock=time.thread_time)  # type: ignore[arg-type]
    return {
        "model": "mlp 784-200-200-200-10 with BatchNorm and dropout, one thread",
        "n_samples": N_SAMPLES,
        "bn_loader": f"{BN_LOADER_BATCHES} batches of 128, a DataLoader over a TensorDataset",
        "build_cpu_seconds": seconds,
    }


def _pass_per_sample(model: torch.nn.Module, posterior: Any, loader: DataLoader) -> None:
    """The build as it was before the one-pass re-estimation: the weight sets drawn, then one
    pass over the loader per weight set (`update_bn_stats` on the ensemble's copy)."""
    ensemble = tradi.SampledEnsemble(model, posterior, N_SAMPLES)
    stats = []
    for weights in ensemble._sets:
        tradi.update_bn_stats(ensemble.model, loader, weights)
        stats.append({n: b.clone() for n, b in ensemble.model.named_buffers()})


BENCHMARKS: dict[str, Callable[[], Result]] = {
    "bn_build_mlp": bn_build_mlp,
    "ensemble_cost_mlp": lambda: ensemble_cost("mlp"),
    "ensemble_cost_lenet5": lambda: ensemble_cost("lenet5"),
    "last_layer_cost_lenet5": lambda: last_layer_cost("lenet5"),
    "last_layer_cost_enet": lambda: last_layer_cost("enet"),
    "method_times_mnist_notmnist": method_times,
}
