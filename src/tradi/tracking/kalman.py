"""TRADI's two scalar Kalman filters, as pure functions (TRADI.md section 2).

The error variance P of each filter does not depend on the data, so ONE scalar P per filter
serves every weight: the gain is a Python float computed once per step, and the per-weight work
is a handful of fused vector operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class KalmanConfig:
    """Process noise Q and measurement noise R of the mean and variance filters.

    Defaults are the authors' public code: Q_mu=1e-4, R_mu=10, Q_s2=5e-5, R_s2=10, P(0)=0, which
    give steady-state gains of about 3.16e-3 (mean) and 2.23e-3 (variance), i.e. moving averages
    with memories of roughly 316 and 448 steps.
    """

    q_mean: float = 1e-4
    r_mean: float = 10.0
    q_var: float = 5e-5
    r_var: float = 10.0
    p0: float = 0.0

    def __post_init__(self) -> None:
        for name in ("q_mean", "r_mean", "q_var", "r_var"):
            if not getattr(self, name) > 0:
                raise ValueError(f"KalmanConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.p0 < 0:
            raise ValueError(f"KalmanConfig.p0 must be >= 0, got {self.p0}")

    @classmethod
    def from_memory(
        cls, mean_steps: float, var_steps: float, r: float = 10.0, p0: float = 0.0
    ) -> KalmanConfig:
        """Filters whose steady-state gain is 1/steps: a memory given in optimizer steps.

        A gain K makes the filter an exponential moving average with time constant about 1/K,
        so "remember about one epoch" is easier to choose than raw noise variances.
        """
        return cls(
            q_mean=process_noise_for_gain(1.0 / mean_steps, r),
            r_mean=r,
            q_var=process_noise_for_gain(1.0 / var_steps, r),
            r_var=r,
            p0=p0,
        )

    @property
    def steady_state_gains(self) -> tuple[float, float]:
        return steady_state_gain(self.q_mean, self.r_mean), steady_state_gain(
            self.q_var, self.r_var
        )


def gain_step(p: float, q: float, r: float) -> tuple[float, float]:
    """One predict/correct step of the error variance: returns (gain K, posterior P)."""
    p_prior = p + q
    k = p_prior / (p_prior + r)
    return k, (1.0 - k) * p_prior


def steady_state_gain(q: float, r: float) -> float:
    """Fixed point of `gain_step`: P- solves x^2 - Qx - QR = 0, and K = P- / (P- + R)."""
    p_prior = 0.5 * (q + math.sqrt(q * q + 4.0 * q * r))
    return p_prior / (p_prior + r)


def process_noise_for_gain(k: float, r: float) -> float:
    """The Q whose steady-state gain with measurement noise R is k (inverse of the above)."""
    if not 0.0 < k < 1.0:
        raise ValueError(f"a steady-state gain must lie in (0, 1), got {k} (memory <= 1 step?)")
    p_prior = k * r / (1.0 - k)
    return p_prior * p_prior / (p_prior + r)
