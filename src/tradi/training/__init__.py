"""The one training loop shared by every method, its callbacks, checkpoints and configuration."""

from tradi.training.callbacks import SWAGCallback, TrackingCallback
from tradi.training.checkpoint import CheckpointError
from tradi.training.config import (
    TrainConfig,
    check_literal_fields,
    make_optimizer,
    make_scheduler,
    options_from_mapping,
)
from tradi.training.exploration import Exploration, explore, mode_mixture
from tradi.training.hooks import Callback, FitResult
from tradi.training.loop import evaluate, fit

__all__ = [
    "Callback",
    "CheckpointError",
    "Exploration",
    "FitResult",
    "SWAGCallback",
    "TrackingCallback",
    "TrainConfig",
    "check_literal_fields",
    "evaluate",
    "explore",
    "fit",
    "make_optimizer",
    "make_scheduler",
    "mode_mixture",
    "options_from_mapping",
]
