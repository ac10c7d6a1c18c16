"""The default ("floor") update (docs/tracker.md, Cost), eager and as one compiled pass: the
scaled variance and its folding, the sampled test that some weight moved, skipped steps, and the
compiled kernel's fallbacks, against closed forms and float64 NumPy."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tradi import KalmanConfig, WeightTracker
from tradi.tracking import fused
from tradi.tracking.kalman import gain_step
from tradi.tracking.updates import RESCALE_BELOW


@pytest.fixture(params=["fused", "eager"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with the compiled floor step, then with the eager one."""
    if request.param == "eager":
        monkeypatch.setattr(fused, "ENABLED", False)
    elif not fused.floor_step_available():
        pytest.skip("no C compiler: the compiled floor step is unavailable")
    return request.param


def test_floor_matches_float64_reference_across_scale_folds(kernel: str) -> None:
    """memory=3 (K_s2 -> 1/3) folds the scale into the stored vector every ~35 steps: 150 SGD
    steps cross several folds and the variance stays within float32 rounding of
    sigma2 = (1 - K)(sigma2 + d^2) in float64."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tracker = WeightTracker(model, memory=3)
    cfg = KalmanConfig.from_memory(3, 3)
    params = dict(model.named_parameters())
    prev = {n: params[n].detach().double().numpy().copy() for n in tracker.names}
    ref = {n: np.zeros_like(w) for n, w in prev.items()}
    p_var, folds, scale = cfg.p0, 0, 1.0
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        assert tracker.update() is True
        k, p_var = gain_step(p_var, cfg.q_var, cfg.r_var)
        variance = tracker.variance()
        for n in tracker.names:
            w = params[n].detach().double().numpy()
            ref[n] = (1 - k) * (ref[n] + (w - prev[n]) ** 2)
            prev[n] = w.copy()
            np.testing.assert_allclose(variance[n].numpy(), ref[n], rtol=2e-6, atol=1e-30)
            assert torch.equal(tracker.mean()[n], params[n].detach())
        new_scale = tracker.state_dict()["variance_scale"]
        folds += new_scale > scale
        scale = new_scale
        assert RESCALE_BELOW <= scale <= 1.0
    assert folds >= 3


def test_a_step_the_probe_misses_is_found_by_the_full_check(kernel: str) -> None:
    """Linear(20, 10): 210 weights, the probe reads every 3rd entry of -d. A step moving only
    weight[0, 1] (flat index 1) is done, with sigma2 = (1 - K) d^2 there and 0 elsewhere; a
    step moving nothing is skipped and leaves the state exactly as it was."""
    torch.manual_seed(0)
    model = nn.Linear(20, 10)
    tracker = WeightTracker(model)
    with torch.no_grad():
        model.weight[0, 1] += 0.5
    assert tracker.update() is True
    k, _ = gain_step(tracker.config.p0, tracker.config.q_var, tracker.config.r_var)
    expected = torch.zeros(10, 20)
    expected[0, 1] = (1 - k) * 0.25
    torch.testing.assert_close(tracker.variance()["weight"], expected, rtol=1e-6, atol=0)
    assert torch.equal(tracker.variance()["bias"], torch.zeros(10))
    assert torch.equal(tracker.mean()["weight"], model.weight.detach())

    before = tracker.state_dict()
    assert tracker.update() is False
    after = tracker.state_dict()
    for key in ("variance", "previous", "variance_scale", "p_var"):
        assert before[key] is not None
        assert torch.equal(torch.as_tensor(before[key]), torch.as_tensor(after[key])), key
    assert (tracker.num_updates, tracker.num_skipped) == (1, 1)


@pytest.mark.parametrize("init_mean", ["weights", "zero"])
def test_checkpoint_without_a_scale_loads_as_scale_one(init_mean: str) -> None:
    """Checkpoints written before the scale existed hold sigma2 itself under "variance"."""
    model = nn.Linear(4, 3)
    source = WeightTracker(model)
    with torch.no_grad():
        model.weight.add_(0.1)
    source.update()
    state = source.state_dict()
    assert state["variance_scale"] != 1.0
    variance = source.variance()
    state["variance"] = torch.cat([variance["weight"].reshape(-1), variance["bias"]])
    del state["variance_scale"]
    target = WeightTracker(model, init_mean=init_mean)  # type: ignore[arg-type]
    target.load_state_dict(state)
    for n, v in target.variance().items():
        torch.testing.assert_close(v, variance[n], rtol=1e-6, atol=0)


def test_non_finite_weights_leave_the_state_as_it_was(kernel: str) -> None:
    model = nn.Linear(30, 20)
    tracker = WeightTracker(model)
    with torch.no_grad():
        model.weight.add_(0.01)
    assert tracker.update() is True
    before = tracker.state_dict()
    for bad in (float("nan"), float("inf"), -float("inf")):
        with torch.no_grad():
            model.weight.add_(0.01)
            model.weight[3, 7] = bad
        # the warning is given once per tracker: later skips are silent
        with pytest.warns(RuntimeWarning, match="non-finite") if bad != bad else nullcontext():
            assert tracker.update() is False
        after = tracker.state_dict()
        assert torch.equal(before["variance"], after["variance"])
        assert torch.equal(before["previous"], after["previous"])
        assert before["variance_scale"] == after["variance_scale"]
    assert (tracker.num_updates, tracker.num_skipped) == (1, 3)


def test_fused_and_eager_steps_agree_over_a_run() -> None:
    """Two trackers on one Adam run, one forced eager: the same outcomes, w(t-1) bit for bit,
    the variance to float32 rounding (bit for bit where torch's addcmul contracts to an FMA
    as the C compiler does, e.g. x86-64 with AVX-512)."""
    if not fused.floor_step_available():
        pytest.skip("no C compiler: the compiled floor step is unavailable")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    compiled, eager = WeightTracker(model, memory=5), WeightTracker(model, memory=5)
    g = torch.Generator().manual_seed(1)
    for step in range(120):
        if step % 10 != 9:  # every 10th step the optimizer does not step
            x, y = torch.randn(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        done = compiled.update()
        fused.ENABLED = False
        try:
            assert eager.update() is done is (step % 10 != 9)
        finally:
            fused.ENABLED = True
    assert torch.equal(compiled.mean()["0.weight"], eager.mean()["0.weight"])
    for n, v in eager.variance().items():
        torch.testing.assert_close(compiled.variance()[n], v, rtol=1e-6, atol=0)


def test_floor_step_serves_only_contiguous_float32_cpu_tensors() -> None:
    if not fused.floor_step_available():
        pytest.skip("no C compiler: the compiled floor step is unavailable")
    var, prev = torch.zeros(6), torch.zeros(6)
    w = torch.ones(2, 3)
    assert fused.floor_step(var, 1.0, prev, [w.bfloat16()]) is None
    assert fused.floor_step(var, 1.0, prev, [w.t()]) is None  # not contiguous
    assert fused.floor_step(var.double(), 1.0, prev, [w]) is None
    assert torch.equal(prev, torch.zeros(6))  # nothing written
    with pytest.raises(ValueError, match="weights of 5 entries against a state of 6"):
        fused.floor_step(var, 1.0, prev, [w.reshape(-1)[:5]])
    assert fused.floor_step(var, 0.5, prev, [w]) == 0  # done: d = 1, sigma2 / scale += 1 / 0.5
    assert torch.equal(var, torch.full((6,), 2.0)) and torch.equal(prev, torch.ones(6))
    assert fused.floor_step(var, 0.5, prev, [w]) == 2  # nothing moved: the state as it was
    assert torch.equal(var, torch.full((6,), 2.0)) and torch.equal(prev, torch.ones(6))


@pytest.fixture
def fresh_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:
    """The kernel built anew into an empty cache; the cached one restored afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fused._kernel.cache_clear()
    yield
    fused._kernel.cache_clear()


@pytest.mark.parametrize(
    ("compiler", "level", "message"),
    [("false", logging.WARNING, "did not build"), ("no-such-cc-x", logging.INFO, "no C compiler")],
)
def test_without_a_working_compiler_the_tracker_runs_eager(
    fresh_kernel: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    compiler: str,
    level: int,
    message: str,
) -> None:
    monkeypatch.setenv("CC", compiler)
    monkeypatch.setattr(fused, "ENABLED", True)  # also under TRADI_FUSED=0
    model = nn.Linear(4, 3)
    tracker = WeightTracker(model)
    with caplog.at_level(logging.INFO, logger="tradi.tracking.fused"):
        for _ in range(3):
            with torch.no_grad():
                model.weight.add_(0.5)
            assert tracker.update() is True
    assert not fused.floor_step_available()
    records = [r for r in caplog.records if message in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == level  # logged once
    k1, p = gain_step(0.0, tracker.config.q_var, tracker.config.r_var)
    k2, p = gain_step(p, tracker.config.q_var, tracker.config.r_var)
    k3, _ = gain_step(p, tracker.config.q_var, tracker.config.r_var)
    want = (1 - k3) * ((1 - k2) * ((1 - k1) * 0.25 + 0.25) + 0.25)
    torch.testing.assert_close(tracker.variance()["weight"], torch.full((3, 4), want))


def test_the_kernel_is_built_into_a_private_cache(fresh_kernel: None, tmp_path) -> None:
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler: the compiled floor step is unavailable")
    assert fused.floor_step_available()  # a compiler is there: the build must succeed
    built = list((tmp_path / "tradi").glob("floor_*.so"))
    assert len(built) == 1
    assert (tmp_path / "tradi").stat().st_mode & 0o077 == 0  # only this user can write there


def test_a_cache_others_can_write_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    shared = tmp_path / "tradi"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    private = fused._cache_dir()
    assert private != shared and private.stat().st_mode & 0o077 == 0
    private.rmdir()
    shared.chmod(0o700)
    assert fused._cache_dir() == shared


# --- the 2026-11-30 mutmut run's survivors: the cache directory, the CPU key, a failed build ----


def test_the_cache_defaults_to_home_dot_cache_and_accepts_other_execute(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".cache" / "tradi"
    assert fused._cache_dir() == cache  # .cache created on the way
    cache.chmod(0o701)  # others may enter, not write: still private enough
    assert fused._cache_dir() == cache


def test_an_unusable_cache_falls_back_to_a_private_tradi_temporary_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    (tmp_path / "tradi").mkdir(mode=0o777)
    (tmp_path / "tradi").chmod(0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    private = fused._cache_dir()
    assert private.name.startswith("tradi-") and private.parent == Path(tempfile.gettempdir())
    private.rmdir()


def test_the_cache_key_names_this_cpu() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines()
    wanted = [next(x for x in lines if x.startswith(key)) for key in ("model name", "flags")]
    key = fused._cpu().splitlines()
    assert all(line in key for line in wanted) and len(key) == len(set(key))


def test_a_failed_build_logs_the_compilers_error_output(
    fresh_kernel: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path,
) -> None:
    compiler = tmp_path / "badcc"
    compiler.write_text("#!/bin/sh\necho boom >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    with caplog.at_level(logging.WARNING, logger="tradi.tracking.fused"):
        assert fused._kernel() is None
    assert [r.getMessage() for r in caplog.records] == [
        "tradi: the fused tracker update did not build (boom\n); eager instead"
    ]


def test_disabled_the_compiled_step_never_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused, "ENABLED", False)  # TRADI_FUSED=0
    prev = torch.zeros(3)
    assert fused.floor_step(torch.zeros(3), 1.0, prev, [torch.ones(3)]) is None
    assert not fused.floor_step_available() and torch.equal(prev, torch.zeros(3))
