"""TRADI's Kalman tracking of weight means and variances during ordinary training."""

from tradi.tracking.kalman import KalmanConfig, steady_state_gain
from tradi.tracking.start import default_param_filter
from tradi.tracking.tracker import WeightTracker

__all__ = ["KalmanConfig", "WeightTracker", "default_param_filter", "steady_state_gain"]
