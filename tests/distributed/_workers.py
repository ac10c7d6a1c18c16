"""What each rank runs in the distributed tests: `python _workers.py SCENARIO OUT_DIR`.

Under torchrun (WORLD_SIZE set) the scenario runs in this process; otherwise it is started on
two processes by `tradi.distributed.launch`. Each rank saves what it computed to
OUT_DIR/rank{r}.pt; the tests compare that with a single-process computation.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

import tradi.distributed as td
from tradi.inference.ensemble import SampledEnsemble
from tradi.tracking import WeightTracker
from tradi.training import fit
from tradi.training.callbacks import TrackingCallback

GLOBAL_BATCH = 16
EPOCHS = 2
# How long a collective waits for a silent peer: a limit that only catches a hang (a peer that
# is merely slow to start on a busy machine must not fail the test).
COLLECTIVE_LIMIT_S = 600


def training_data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(72, 6, generator=g), torch.randint(0, 3, (72,), generator=g))


def tiny_model() -> nn.Module:
    """No BatchNorm or dropout: per-rank batch statistics or masks would differ from one
    process's, and the exactness test is about the gradients and the tracker."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def trackers(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[TrackingCallback]:
    return [
        TrackingCallback(lambda m, o: WeightTracker(m)),
        TrackingCallback(lambda m, o: WeightTracker(m, step="gradient", optimizer=o)),
    ]


def train(
    model: nn.Module, loader: DataLoader
) -> tuple[list[TrackingCallback], nn.Module, torch.optim.Optimizer]:
    """The shared training loop with two trackers, as the TRADI method runs it."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    callbacks = trackers(model, optimizer)
    fit(model, loader, optimizer=optimizer, epochs=EPOCHS, callbacks=callbacks, progress=False)
    return callbacks, model, optimizer


def scenario_train(out: Path) -> None:
    ddp = DistributedDataParallel(tiny_model())
    loader = td.shard_loader(training_data(), GLOBAL_BATCH, shuffle=True, seed=5)
    callbacks, _, _ = train(ddp, loader)
    assert all(c.tracker is not None for c in callbacks)
    torch.save(
        {
            "delta": callbacks[0].tracker.state_dict(),  # type: ignore[union-attr]
            "gradient": callbacks[1].tracker.state_dict(),  # type: ignore[union-attr]
            "weights": td.unwrap(ddp).state_dict(),
            "batches_per_epoch": len(loader),
        },
        out / f"rank{td.rank()}.pt",
    )
    mark_writer(out)


@td.rank_zero_only
def mark_writer(out: Path) -> None:
    (out / f"written_by_rank{td.rank()}.txt").write_text("results")


def evaluation_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Probabilities of 103 in-distribution samples with labels, and 57 OOD scores."""
    g = torch.Generator().manual_seed(1)
    probs = (2 * torch.randn(103, 4, generator=g, dtype=torch.float64)).softmax(1)
    labels = torch.randint(0, 4, (103,), generator=g)
    ood_scores = (torch.randn(57, 4, generator=g, dtype=torch.float64)).softmax(1).amax(1)
    return probs, labels, ood_scores


def scenario_metrics(out: Path) -> None:
    # heavy imports (torchmetrics, FSDP) stay in the scenarios that use them: the spawned
    # processes of the other scenarios start seconds faster
    from tradi.metrics import ClassificationMetrics, OODMetrics

    probs, labels, ood_scores = evaluation_data()
    local = td.shard_dataset(TensorDataset(probs, labels))
    local_ood = td.shard_dataset(TensorDataset(ood_scores))
    classification, ood = ClassificationMetrics(), OODMetrics()
    nll_sum, count = 0.0, 0
    seen_probs, seen_labels = [], []
    for batch_probs, batch_labels in DataLoader(local, batch_size=10):
        classification.update(batch_probs, batch_labels)
        ood.update(batch_probs.amax(1), False)
        nll_sum += float(-batch_probs.gather(1, batch_labels[:, None]).log().sum())
        count += len(batch_labels)
        seen_probs.append(batch_probs)
        seen_labels.append(batch_labels)
    for (batch_scores,) in DataLoader(local_ood, batch_size=10):
        ood.update(batch_scores, True)
    torch.save(
        {
            "classification": classification.compute(),  # torchmetrics reduces the states
            "ood": ood.compute(),
            "sums": td.all_reduce_sums({"nll_sum": nll_sum, "count": count}),
            "probs": td.all_gather_tensors(torch.cat(seen_probs)),
            "labels": td.all_gather_tensors(torch.cat(seen_labels)),
            "local_count": count,
        },
        out / f"rank{td.rank()}.pt",
    )


def ensemble_inputs() -> torch.Tensor:
    return torch.randn(9, 6, generator=torch.Generator().manual_seed(3))


def scenario_fsdp(out: Path) -> None:
    """FSDP2: each Linear and the root sharded on dim 0 (16 rows: 8 + 8; 3 rows: 2 + 1)."""
    from torch.distributed.fsdp import fully_shard

    model = tiny_model()
    for module in (model[0], model[2], model):
        fully_shard(module)
    loader = td.shard_loader(training_data(), GLOBAL_BATCH, shuffle=True, seed=5)
    callbacks, _, _ = train(model, loader)
    tracker = callbacks[0].tracker
    assert tracker is not None
    plain = tiny_model()
    plain.load_state_dict(td.full_state_dict(model))
    posterior = tracker.posterior("kernel", scale=3.0)  # gathered on every rank
    ensemble = SampledEnsemble(plain, posterior, 4, seed=2)
    torch.save(
        {
            "local_mean": tracker.mean(),
            "local_variance": tracker.variance(),
            "gradient_local_variance": callbacks[1].tracker.variance(),  # type: ignore[union-attr]
            "gathered_mean": posterior.mean,  # type: ignore[attr-defined]
            "weights": plain.state_dict(),
            "probs": ensemble(ensemble_inputs()),
        },
        out / f"rank{td.rank()}.pt",
    )


def segmentation_benchmark() -> Any:
    """13 test images 6x5 of 3 classes, an OOD label 3 and void pixels (255); 13 splits 7 + 6."""
    from tradi.data import Benchmark, TensorSplit

    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 4, (13, 6, 5), generator=g)
    labels[:, 0, :2] = 255
    split = TensorSplit(torch.randn(13, 2, 6, 5, generator=g), labels)
    return Benchmark(
        name="seg",
        task="segmentation",
        train=split,
        val=split,
        test=split,
        ood_test=None,
        ood_val=None,
        num_classes=3,
        input_shape=(2, 6, 5),
        class_names=("a", "b", "c"),
        ignore_index=255,
        ood_label=3,
    )


def segmentation_predictor() -> Any:
    """Two passes per image of a fixed 1x1 convolution: a function of the image alone."""
    conv = nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.linspace(-2, 2, 6).reshape(3, 2, 1, 1))

    @torch.no_grad()
    def predict(loader: Any) -> Any:
        for images, _ in loader:
            yield torch.stack([conv(images).softmax(1), conv(0.5 * images).softmax(1)])

    return predict


def scenario_segmentation(out: Path) -> None:
    """The runner's streamed dense evaluation of this rank's block of the test set (batches
    of 4: the ranks' batch boundaries differ from one process's)."""
    from tradi.experiments.evaluation import evaluate
    from tradi.experiments.loaders import TensorBatches
    from tradi.experiments.pairs import rank_block

    benchmark = segmentation_benchmark()
    block = TensorBatches(rank_block(benchmark.test), 4)
    evaluation = evaluate(segmentation_predictor, benchmark, block, None)
    torch.save(
        {
            "metrics": evaluation.metrics,
            "scores_in": evaluation.scores_in,
            "scores_out": evaluation.scores_out,
            "panels": evaluation.panels,
            "local_images": len(block.split),
        },
        out / f"rank{td.rank()}.pt",
    )


def scenario_folder(out: Path) -> None:
    """The runner's output-folder claim: rank 0 alone locks and checks, every rank gets its
    verdict. Each rank records what it saw in rank<r>.json."""
    from tradi.experiments import OutputFolderError, config_from_dict
    from tradi.experiments.rundir import LOCK_NAME, claim_out_dir

    config = config_from_dict({"name": "x", "benchmark": "digits", "methods": {"mcp": {}}})
    seen: dict[str, Any] = {}
    with claim_out_dir(out / "fresh", config, resume=False, overwrite=False):
        td.barrier()  # rank 0 holds the lock now
        seen["lock"] = json.loads((out / "fresh" / LOCK_NAME).read_text())
        td.barrier()
    if td.rank() == 0:
        (out / "fresh" / "results.json").write_text("{}")  # a finished run's file
    td.barrier()
    try:
        with claim_out_dir(out / "fresh", config, resume=False, overwrite=False):
            seen["entered"] = True
    except OutputFolderError as error:
        seen["refused"] = str(error)
    seen["pid"] = os.getpid()
    (out / f"rank{td.rank()}.json").write_text(json.dumps(seen))
    td.barrier()  # no rank leaves while another still checks


def scenario_all(out: Path) -> None:
    """DDP training, evaluation and FSDP2 in one run: starting processes is the slow part."""
    for name, scenario in (
        ("train", scenario_train),
        ("metrics", scenario_metrics),
        ("fsdp", scenario_fsdp),
        ("segmentation", scenario_segmentation),
        ("folder", scenario_folder),
    ):
        (out / name).mkdir(exist_ok=True)
        scenario(out / name)


def scenario_fail(out: Path) -> None:
    if td.rank() == 1:
        raise ValueError("rank one broke on purpose")
    dist.barrier()  # rank 0 would wait here forever if nobody stopped it


SCENARIOS = {
    "train": scenario_train,
    "all": scenario_all,
    "fail": scenario_fail,
}


def main() -> None:
    scenario, out = SCENARIOS[sys.argv[1]], Path(sys.argv[2])
    if "WORLD_SIZE" in os.environ:  # started by torchrun
        td.init_from_env(timeout_s=COLLECTIVE_LIMIT_S)
        scenario(out)
        td.shutdown()
    else:
        td.launch(scenario, 2, (out,), timeout_s=COLLECTIVE_LIMIT_S)


if __name__ == "__main__":
    main()
