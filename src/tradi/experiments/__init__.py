"""Experiments: YAML configs shipped with the package, the resumable runner, results and report.

```python
config = load_config("digits")            # or a path to an edited copy
results = run_experiment(config, "runs/digits")
results["summary"]["tradi"]["stats"]["auroc"]["mean"]
```

The same is `tradi run digits --out runs/digits` on the command line.
"""

from tradi.experiments.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    ScaleSelectionConfig,
    apply_overrides,
    check_device,
    config_from_dict,
    config_names,
    config_text,
    load_config,
    recipe_differences,
)
from tradi.experiments.paper import PAPER_TABLES, PaperTable
from tradi.experiments.report import main_table, summarize
from tradi.experiments.rundir import OutputFolderError
from tradi.experiments.runner import run_experiment, select_methods

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
