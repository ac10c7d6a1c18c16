"""The floor update (`updates.update_floor`) as ONE compiled pass over the state, on the CPU.

The eager floor step is four passes with their dispatch (the weights' sums, -d into w(t-1), the
variance, the copy of the weights); on the paper's MLP they cost ~8% of a training step. This
C loop reads each weight, w(t-1) and the variance once and writes the last two once, after one
read-only pass that checks the weights are finite: the same arithmetic, in float32, and the same
outcomes (docs/tracker.md, Cost). It is compiled once per machine and CPU with the system's C
compiler (`$CC`, else `cc`; 0.2 s here) into `~/.cache/tradi` and called through ctypes.

Whenever it cannot serve, `floor_step` returns None and the caller runs the eager update: no C
compiler, a failed build (logged once), `ENABLED` False (`TRADI_FUSED=0`), or weights that are
not contiguous float32 CPU tensors (CUDA, bf16, ...; not logged: the eager ops serve there).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

# False: always the eager update (`TRADI_FUSED=0` in the environment, or set it at run time)
ENABLED = os.environ.get("TRADI_FUSED", "1") != "0"

# 0: done; 1: a non-finite weight (nothing written); 2: no weight moved (the variance gains
# exactly 0 and w(t-1) = w, equal to it: the state is as it was)
SOURCE = r"""
#include <stdint.h>
#include <string.h>

static int all_finite(const float *const *w, const int64_t *n, int64_t k) {
    uint32_t bad = 0;
    for (int64_t t = 0; t < k; ++t)
        for (int64_t i = 0; i < n[t]; ++i) {
            uint32_t b;
            memcpy(&b, w[t] + i, 4);
            bad |= (uint32_t)((b & 0x7f800000u) == 0x7f800000u);  /* exponent all ones */
        }
    return bad == 0;
}

int tradi_floor_step(const float *const *w, const int64_t *n, int64_t k,
                     float *prev, float *var, float inv_scale) {
    if (!all_finite(w, n, k)) return 1;
    uint32_t moved = 0;
    for (int64_t t = 0; t < k; ++t) {
        const float *x = w[t];
        for (int64_t i = 0; i < n[t]; ++i) {
            float d = x[i] - prev[i];
            var[i] += inv_scale * d * d;
            prev[i] = x[i];
            moved |= (uint32_t)(d != 0.0f);
        }
        prev += n[t];
        var += n[t];
    }
    return moved ? 0 : 2;
}
"""
# the compiler's default floating-point contraction, as in torch's own kernels: on x86-64 with
# AVX-512 the variance is then bit-identical to the eager addcmul's (measured, 300 Adam steps)
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")


def _cache_dir() -> Path:
    """A directory only this user can write (a shared /tmp would let others plant a library),
    else a fresh private temporary one."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tradi"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = base.stat()
        if info.st_uid == os.getuid() and not info.st_mode & 0o022 and os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="tradi-"))


def _cpu() -> str:
    """What -march=native compiles for: the CPU's model and flags where Linux says them (a home
    directory shared by different machines must not hand one CPU's build to another)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(dict.fromkeys(line for line in lines if line.startswith(wanted)))


def _build(compiler: str) -> Path:
    """The shared library, compiled unless this machine's cache has it (atomic rename: safe
    with several processes, e.g. DDP ranks or test workers, building at once)."""
    key = "\0".join((SOURCE, compiler, *FLAGS, platform.machine(), _cpu()))
    cache = _cache_dir()
    target = cache / f"floor_{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as work:
        source, built = Path(work) / "floor.c", Path(work) / "floor.so"
        source.write_text(SOURCE)
        subprocess.run(
            [compiler, *FLAGS, "-o", str(built), str(source)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        os.replace(built, target)
    return target


@functools.cache
def _kernel() -> Callable[..., int] | None:
    """The compiled function, or None (logged once) where it cannot be built or loaded."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        logger.info("tradi: no C compiler found; the tracker uses its eager update")
        return None
    try:
        function = ctypes.CDLL(str(_build(compiler))).tradi_floor_step
    except (OSError, subprocess.SubprocessError, AttributeError) as error:
        detail = getattr(error, "stderr", None) or error
        logger.warning("tradi: the fused tracker update did not build (%s); eager instead", detail)
        return None
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    function.argtypes += [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float]
    return function


def floor_step_available() -> bool:
    """Whether `floor_step` can serve float32 CPU weights here (builds the kernel if needed)."""
    return ENABLED and _kernel() is not None


def _servable(tensor: Tensor) -> bool:
    return tensor.dtype == torch.float32 and tensor.is_cpu and tensor.is_contiguous()


def floor_step(var: Tensor, scale: float, prev: Tensor, weights: list[Tensor]) -> int | None:
    """One floor step (`updates.update_floor`'s arithmetic) in one compiled pass.

    Args:
        var: flat float32 sigma2 / scale, updated in place.
        scale: the variance scale; the step adds d^2 / scale.
        prev: flat float32 w(t-1), the weights' concatenation in order; becomes w.
        weights: the tracked weights, whose sizes sum to `prev.numel()`.

    Returns:
        0 done, 1 some weight non-finite, 2 no weight moved (the state left as it was), or
        None when the kernel cannot serve these tensors (the caller runs the eager update).

    Raises:
        ValueError: the weights' sizes do not add up to the state's (nothing is written).
    """
    kernel = _kernel() if ENABLED else None
    if kernel is None or not all(_servable(t) for t in (var, prev, *weights)):
        return None
    sizes = [w.numel() for w in weights]
    if sum(sizes) != prev.numel() or var.numel() != prev.numel():
        raise ValueError(f"weights of {sum(sizes)} entries against a state of {prev.numel()}")
    pointers = (ctypes.c_void_p * len(weights))(*[w.data_ptr() for w in weights])
    counts = (ctypes.c_int64 * len(weights))(*sizes)
    return int(kernel(pointers, counts, len(weights), prev.data_ptr(), var.data_ptr(), 1.0 / scale))
