"""The correctness checks of `benchmarks/gpu_check.py`, run on one device (docs/gpu.md).

Each check returns a dict with "passed" and its numbers. References are written here
independently of the code under test: the tracker against a float64 NumPy recursion of
TRADI.md section 2 from the recorded weights (and steps), the scale-0 ensemble against the
network itself (BatchNorm statistics re-estimated by hand in plain torch).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tradi import KalmanConfig, SampledEnsemble, WeightTracker
from tradi.metrics.streaming import ClassificationMetrics, OODMetrics
from tradi.tracking.start import initial_variance
from tradi.tracking.updates import _all_finite, gradient_steps

Result = dict[str, Any]
#: weight dtypes of the tracker check; "amp_fp16": float32 weights under fp16 autocast with a
#: torch.amp.GradScaler (one inf gradient injected: the scaler skips that step)
MODES = ("float32", "bfloat16", "float16", "amp_fp16")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _mlp(device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4)).to(device, dtype)


def _numpy_tradi(records: list[dict[str, Any]], w0: np.ndarray, cfg: KalmanConfig) -> tuple:
    """mu, sigma2 of TRADI.md section 2 in float64 from mu(0) = w(0), sigma2(0) = 0, over the
    updates that were done (a skipped step changes nothing, the gains included)."""
    p_mu = p_s2 = cfg.p0
    mu, s2 = w0.copy(), np.zeros_like(w0)
    for r in records:
        if not r["done"]:
            continue
        prior = p_mu + cfg.q_mean
        k_mu, p_mu = prior / (prior + cfg.r_mean), (1 - prior / (prior + cfg.r_mean)) * prior
        prior = p_s2 + cfg.q_var
        k_s2, p_s2 = prior / (prior + cfg.r_var), (1 - prior / (prior + cfg.r_var)) * prior
        d, w = r["d"], r["w"]
        mu = (1 - k_mu) * (mu + d) + k_mu * w
        s2 = (1 - k_s2) * (s2 + d * d) + k_s2 * (w - mu) ** 2
    return mu, s2


def _train_tracked(device: torch.device, mode: str, step: str, steps: int) -> tuple:
    """Train the MLP `steps` SGD steps in `mode`, tracking; returns the tracker, the first
    layer's w(0) and per-step records (weights, d, whether the update was done)."""
    amp = mode == "amp_fp16"
    dtype = torch.float32 if amp else _DTYPES[mode]
    model, lr = _mlp(device, dtype), 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    tracker = WeightTracker(model, step=step, optimizer=opt, memory=20)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**10) if amp else None
    gen = torch.Generator().manual_seed(1)
    w0 = model[0].weight.detach().double().cpu().numpy()
    records, previous = [], w0
    for t in range(steps):
        x = torch.randn(64, 12, generator=gen).to(device, dtype)
        y = torch.randint(0, 4, (64,), generator=gen).to(device)
        opt.zero_grad()
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            if t == 3:  # an overflow: the scaler must skip the step, the tracker too
                model[0].weight.grad[0, 0] = float("inf")
            scaler.step(opt)  # unscales the gradients in place first
            scaler.update()
        grad = model[0].weight.grad.detach().double().cpu().numpy()
        done = tracker.update()
        w = model[0].weight.detach().double().cpu().numpy()
        d = (w - previous) if step == "delta" else -lr * grad
        records.append({"done": done, "w": w, "d": d})
        previous = w if done else previous
    return tracker, w0, records


def check_tracker(device: torch.device, steps: int) -> Result:
    """The tracker against the NumPy recursion for every weight mode and both step forms."""
    out: Result = {"passed": True}
    for mode in MODES:
        for step in ("delta", "gradient"):
            tracker, w0, records = _train_tracked(device, mode, step, steps)
            mu, s2 = _numpy_tradi(records, w0, tracker.config)
            got_mu = tracker.mean()["0.weight"].double().cpu().numpy()
            got_s2 = tracker.variance()["0.weight"].double().cpu().numpy()
            err_mu = float(np.abs(got_mu - mu).max() / np.abs(mu).max())
            err_s2 = float(np.abs(got_s2 - s2).max() / np.abs(s2).max())
            skipped = sum(not r["done"] for r in records)
            ok = (
                err_mu < 1e-4
                and err_s2 < 1e-3
                and tracker.num_skipped == skipped
                and (skipped == 1) == (mode == "amp_fp16")
                and tracker.variance()["0.weight"].dtype == torch.float32
            )
            out[f"{mode}/{step}"] = {
                "mean_rel_err": err_mu,
                "variance_rel_err": err_s2,
                "skipped": skipped,
                "passed": ok,
            }
            out["passed"] &= ok
    return out


def check_device_paths(device: torch.device) -> Result:
    """What docs/testing.md lists as only an accelerator run tells apart, as assertions: state
    and samples on the parameter's device, `_all_finite`'s non-CPU branch, a non-finite step
    skipped with the state untouched, and zeros / initial variances allocated on the device."""
    model = _mlp(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = WeightTracker(model, step="delta")
    model(torch.randn(8, 12, device=device)).sum().backward()
    opt.step()
    tracker.update()
    state = {k: v.clone() for k, v in tracker.state_dict().items() if isinstance(v, Tensor)}
    facts = {
        "state_on_device": all(v.device.type == device.type for v in state.values()),
        "sample_on_device": all(
            v.device.type == device.type
            for v in tracker.posterior("diag")
            .sample(torch.Generator(device).manual_seed(0))
            .values()
        ),
        "all_finite_true": _all_finite([torch.ones(5, device=device)]),
        "all_finite_false": not _all_finite(
            [torch.ones(5, device=device), torch.tensor([1.0, float("nan")], device=device)]
        ),
        "gradless_zeros_on_device": gradient_steps(
            [nn.Parameter(torch.ones(3, device=device))], [3], opt
        ).device.type
        == device.type,
        "initial_variance_on_device": initial_variance(
            "public_code", [4], [torch.Size([2, 2])], device
        ).device.type
        == device.type,
    }
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    skipped = not tracker.update() and tracker.num_skipped == 1
    after = {k: v for k, v in tracker.state_dict().items() if isinstance(v, Tensor)}
    facts["non_finite_skipped"] = skipped
    facts["state_untouched"] = all(torch.equal(after[k], v) for k, v in state.items())
    return {"passed": all(facts.values()), **facts}


def _cnn(device: torch.device, bn: bool) -> nn.Sequential:
    torch.manual_seed(0)
    norm = [nn.BatchNorm2d(8)] if bn else []
    layers = [nn.Conv2d(3, 8, 3, padding=1), *norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(8, 4)).to(device)


def _bn_reference(model: nn.Module, batches: list[Tensor], x: Tensor) -> Tensor:
    """The network with BatchNorm statistics re-estimated over `batches` (cumulative average,
    plain torch), evaluated on `x`: what a scale-0 ensemble with bn_loader must give."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    ref.train()
    with torch.no_grad():
        for b in batches:
            ref(b)
    return ref.eval()(x).softmax(1)


def check_scale0_ensemble(device: torch.device) -> Result:
    """A scale-0 TRADI ensemble equals its network, loop and vmap, with and without BatchNorm
    re-estimation (TF32 off for these comparisons)."""
    out: Result = {"passed": True}
    gen = torch.Generator().manual_seed(2)
    batches = [torch.randn(16, 3, 8, 8, generator=gen).to(device) for _ in range(3)]
    loader = [(b, torch.zeros(len(b), dtype=torch.long, device=device)) for b in batches]
    x = torch.randn(10, 3, 8, 8, generator=gen).to(device)
    for bn in (False, True):
        model = _cnn(device, bn)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        tracker = WeightTracker(model)
        for b in batches:
            opt.zero_grad()
            model(b).logsumexp(1).mean().backward()
            opt.step()
            tracker.update()
        model.eval()
        with torch.no_grad():
            want = _bn_reference(model, batches, x) if bn else model(x).softmax(1)
        for batching in ("loop", "vmap"):
            posterior = tracker.posterior("diag", scale=0.0)
            ens = SampledEnsemble(
                model, posterior, n_samples=3, batching=batching, bn_loader=loader if bn else None
            )
            err = float((ens(x) - want).abs().max())
            key = f"{'bn' if bn else 'no_bn'}/{batching}"
            out[key] = {"max_abs_diff": err, "passed": err < 1e-5}
            out["passed"] &= err < 1e-5
    return out


def check_metrics_on_device(device: torch.device) -> Result:
    """Streaming metrics fed device tensors equal the same metrics fed CPU tensors (the device
    arguments of their states and bin edges)."""
    gen = torch.Generator().manual_seed(3)
    probs = torch.randn(500, 5, generator=gen).softmax(1)
    labels = torch.randint(0, 5, (500,), generator=gen)
    is_ood = torch.rand(500, generator=gen) < 0.3
    got, want = {}, {}
    for where, out in ((device, got), (torch.device("cpu"), want)):
        cls = ClassificationMetrics().to(where)
        cls.update(probs.to(where), labels.to(where))
        ood = OODMetrics().to(where)
        ood.update(probs.max(1).values.to(where), is_ood.to(where))
        out.update({f"cls/{k}": v for k, v in cls.compute().items()})
        out.update({f"ood/{k}": v for k, v in ood.compute().items()})
    diff = max(abs(float(got[k]) - float(want[k])) for k in want)
    return {"passed": diff < 1e-9 and got.keys() == want.keys(), "max_abs_diff": diff}


class _Unvmappable(nn.Module):
    """A network vmap cannot trace (`.item()` in forward): batching="auto" must fall back."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(12, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) * (1.0 + 0.0 * float(self.linear.weight.sum().item()))


def check_batching_auto(device: torch.device) -> Result:
    """batching="auto": vmap where it traces on an accelerator (the loop at once on the CPU), the
    loop where it cannot, with the loop's predictions either way."""
    out: Result = {}
    x = torch.randn(6, 12, device=device)
    for name, model in (("mlp", _mlp(device)), ("unvmappable", _Unvmappable().to(device))):
        tracker = WeightTracker(model)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)
        tracker.update()
        posterior = tracker.posterior("diag", scale=1.0)
        auto = SampledEnsemble(model, posterior, n_samples=4, batching="auto")
        loop = SampledEnsemble(model, posterior, n_samples=4, batching="loop")
        err = float((auto(x) - loop(x)).abs().max())
        expected = "vmap" if name == "mlp" and device.type != "cpu" else "loop"
        out[name] = {"used": auto.batching_used, "max_abs_diff": err}
        out[name]["passed"] = auto.batching_used == expected and err < 1e-5
    out["passed"] = all(v["passed"] for v in out.values())
    return out
