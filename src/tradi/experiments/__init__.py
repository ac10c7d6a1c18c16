"""Experiments: YAML configs shipped with the package, the resumable runner, results and report.

```python
config = load_config("digits")            # or a path to an edited copy
results = run_experiment(config, "runs/digits")
results["summary"]["tradi"]["stats"]["auroc"]["mean"]
```

The same is `tradi run digits --out runs/digits` on the command line.

Every name is imported on first use (PEP 562 `__getattr__`), as in the `tradi` package itself:
`tradi list`, `tradi show` and a mistyped `tradi run NAME` reach `tradi.experiments.catalog`
without importing torch, torchmetrics and scipy (issue 21).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradi._imports import lazy_names

if TYPE_CHECKING:  # the names below are imported on first use (`__getattr__`)
    from tradi.experiments.catalog import config_names, config_text
    from tradi.experiments.config import (
        DataConfig,
        ExperimentConfig,
        ModelConfig,
        ScaleSelectionConfig,
        check_device,
        config_from_dict,
        load_config,
        recipe_differences,
        select_methods,
    )
    from tradi.experiments.errors import ConfigError
    from tradi.experiments.paper import PAPER_TABLES, PaperTable
    from tradi.experiments.rundir import OutputFolderError
    from tradi.experiments.runner import run_experiment
    from tradi.experiments.tables import main_table, summarize
    from tradi.experiments.yaml_text import apply_overrides

_LAZY = {
    "PAPER_TABLES": "tradi.experiments.paper",
    "ConfigError": "tradi.experiments.errors",
    "DataConfig": "tradi.experiments.config",
    "ExperimentConfig": "tradi.experiments.config",
    "ModelConfig": "tradi.experiments.config",
    "OutputFolderError": "tradi.experiments.rundir",
    "PaperTable": "tradi.experiments.paper",
    "ScaleSelectionConfig": "tradi.experiments.config",
    "apply_overrides": "tradi.experiments.yaml_text",
    "check_device": "tradi.experiments.config",
    "config_from_dict": "tradi.experiments.config",
    "config_names": "tradi.experiments.catalog",
    "config_text": "tradi.experiments.catalog",
    "load_config": "tradi.experiments.config",
    "main_table": "tradi.experiments.tables",
    "recipe_differences": "tradi.experiments.config",
    "run_experiment": "tradi.experiments.runner",
    "select_methods": "tradi.experiments.config",
    "summarize": "tradi.experiments.tables",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = [
    "PAPER_TABLES",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OutputFolderError",
    "PaperTable",
    "ScaleSelectionConfig",
    "apply_overrides",
    "check_device",
    "config_from_dict",
    "config_names",
    "config_text",
    "load_config",
    "main_table",
    "recipe_differences",
    "run_experiment",
    "select_methods",
    "summarize",
]
