"""StreetHazards and BDD-Anomaly read from fixtures written in their published layouts: which
label values train, which are the anomalies (OOD at test only), which images go where, the
resizing, the missing-data message, the shipped configs and the report's conventions."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tradi.data import DatasetNotFoundError, load_benchmark
from tradi.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from tradi.data.files import DOWNLOADS, Archive
from tradi.experiments import config_from_dict, config_names, load_config, run_experiment
from tradi.experiments.config import config_text
from tradi.experiments.tables import main_table

SKIP = {"streethazards/train": None, "streethazards/test": None, "bdd100k/seg": None}
H, W = 6, 8


def _image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _save_pair(image: Path, label: Path, pixels: np.ndarray, labels: np.ndarray) -> None:
    for path in (image, label):
        path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(image)
    Image.fromarray(labels, mode="L").save(label)


def _write_streethazards(root: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """The tars' layout: train/{images,annotations}/{training,validation}/<town>/<n>.png and
    test/{images,annotations}/test/<town>/<n>.png; labels 1-13, and 14 in the test towns.
    Returns the raw arrays per split in the expected order (towns, then files, sorted)."""
    rng = np.random.default_rng(0)
    towns = {
        ("train", "training"): {"t1": 2, "t2": 1},
        ("train", "validation"): {"t4": 2},
        ("test", "test"): {"t5": 1, "t6": 2},
    }
    written: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for (tar, folder), counts in towns.items():
        split = {"training": "train", "validation": "val", "test": "test"}[folder]
        written[split] = []
        for town, n in sorted(counts.items()):
            for index in range(n):
                labels = rng.integers(1, 15 if split == "test" else 14, (H, W)).astype(np.uint8)
                labels[0, 0] = 0  # a value the reference code ignores (-1 after its shift)
                pixels = _image(rng)
                name = f"{300 + index}.png"
                base = root / "streethazards" / tar
                _save_pair(
                    base / "images" / folder / town / name,
                    base / "annotations" / folder / town / name,
                    pixels,
                    labels,
                )
                written[split].append((pixels, labels))
    return written


def _stack(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _normalised(pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)


def test_streethazards_trains_13_classes_and_tests_the_anomaly(tmp_path: Path) -> None:
    written = _write_streethazards(tmp_path)
    bench = load_benchmark("streethazards", tmp_path, checksums=SKIP)
    assert (bench.num_classes, bench.ood_label, bench.ignore_index) == (13, 13, 255)
    assert bench.class_names[0] == "unlabeled" and bench.class_names[-1] == "traffic sign"
    for split, data in (("train", bench.train), ("val", bench.val), ("test", bench.test)):
        pixels, raw = _stack(written[split])
        torch.testing.assert_close(data.x, _normalised(pixels), rtol=0, atol=1e-5)
        expected = np.where(raw == 0, 255, raw - 1)  # file value v -> class v - 1
        torch.testing.assert_close(data.y, torch.from_numpy(expected).long())
    assert (bench.test.y == 13).any() and not (bench.train.y == 13).any()
    assert len(bench.train) == 3 and len(bench.val) == 2 and len(bench.test) == 3


def test_image_size_averages_pixels_and_keeps_label_values(tmp_path: Path) -> None:
    written = _write_streethazards(tmp_path)
    bench = load_benchmark("streethazards", tmp_path, checksums=SKIP, image_size=(3, 4))
    pixels, raw = _stack(written["train"])
    assert bench.input_shape == (3, 3, 4) and bench.train.y.shape == (3, 3, 4)
    blocks = pixels.reshape(3, 3, 2, 4, 2, 3).astype(np.float64).mean(axis=(2, 4))
    expected = _normalised(np.round(blocks).astype(np.uint8))
    torch.testing.assert_close(bench.train.x, expected, rtol=0, atol=1.01 / 255 / 0.224)
    labels = np.where(raw == 0, 255, raw - 1).reshape(3, 3, 2, 4, 2)
    got = bench.train.y.numpy()[:, :, None, :, None]
    assert ((labels == got).any(axis=(2, 4))).all()  # every label is one of its 2x2 block's


def _write_bdd(root: Path) -> dict[str, np.ndarray]:
    """seg/images/{train,val}/<id>.jpg + seg/labels/{train,val}/<id>_train_id.png, train ids
    0-18 and 255. Image 'b' of train holds a train (16), 'a' of val a motorcycle (17)."""
    rng = np.random.default_rng(1)
    labels = {}
    for split, names in (("train", "abc"), ("val", "ab")):
        for name in names:
            raw = rng.choice([*range(16), 18, 255], (H, W)).astype(np.uint8)
            if (split, name) == ("train", "b"):
                raw[1, 1] = 16
            if (split, name) == ("val", "a"):
                raw[2, :3] = 17
            base = root / "bdd100k" / "seg"
            _save_pair(
                base / "images" / split / f"{name}.jpg",
                base / "labels" / split / f"{name}_train_id.png",
                _image(rng),
                raw,
            )
            labels[f"{split}/{name}"] = raw
    return labels


def test_bdd_anomaly_moves_motorcycle_and_train_images_to_test(tmp_path: Path) -> None:
    raw = _write_bdd(tmp_path)
    bench = load_benchmark("bdd-anomaly", tmp_path, checksums=SKIP)
    assert (bench.num_classes, bench.ood_label) == (17, 17)
    assert "bicycle" in bench.class_names and "motorcycle" not in bench.class_names
    known = {**{v: v for v in range(16)}, 18: 16, 255: 255, 16: 17, 17: 17}

    def mapped(*keys: str) -> torch.Tensor:
        maps = [np.vectorize(known.__getitem__)(raw[k]) for k in keys]
        return torch.from_numpy(np.stack(maps)).long()

    torch.testing.assert_close(bench.train.y, mapped("train/a", "train/c"))
    torch.testing.assert_close(bench.val.y, mapped("val/b"))
    torch.testing.assert_close(bench.test.y, mapped("train/b", "val/a"))  # train's first
    assert int((bench.test.y == 17).sum()) == 4


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("streethazards", ["streethazards/train", "streethazards_train.tar"]),
        ("bdd-anomaly", ["bdd100k/seg", "bdd-data.berkeley.edu", "hendrycks/anomaly-seg"]),
    ],
)
def test_missing_data_says_where_it_goes_and_where_it_comes_from(
    tmp_path: Path, name: str, names: list[str]
) -> None:
    with pytest.raises(DatasetNotFoundError) as error:
        load_benchmark(name, tmp_path)
    for text in names:
        assert text in str(error.value)


def test_image_size_is_refused_where_it_does_not_apply(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size applies to streethazards"):
        load_benchmark("camvid-ood", tmp_path, image_size=(10, 10))


@pytest.mark.parametrize("name", ["streethazards", "bdd-anomaly"])
def test_shipped_configs_paper_settings_and_cpu_budget(name: str) -> None:
    assert {name, f"{name}-cpu"} <= set(config_names())
    paper, budget = load_config(name), load_config(f"{name}-cpu")
    for config in (paper, budget):
        assert config.benchmark == name and config.model.name == "pspnet"
        assert config.model.options["output_stride"] == 8
        assert {"mcp", "tradi", "mc_dropout", "deep_ensembles"} <= set(config.methods)
    assert paper.model.options["depth"] == 50 and paper.device == "cuda"
    assert paper.data.image_size == (360, 640)
    assert budget.device == "cpu" and budget.data.image_size == (90, 160)


def _results(benchmark: str, metrics: dict[str, float]) -> dict[str, Any]:
    stats = {k: {"mean": v, "std": None} for k, v in metrics.items()}
    times = {"mean": 1.0, "std": None}
    return {
        "config": {"benchmark": benchmark},
        "summary": {
            "tradi": {
                "label": "TRADI",
                "method": "tradi",
                "stats": {**stats, "train_seconds": times, "test_seconds": times},
            }
        },
    }


@pytest.mark.parametrize(
    ("benchmark", "fpr_header"),
    [("streethazards", "FPR95 % (OOD positive)"), ("camvid-ood", "FPR95 % (in-dist. positive)")],
)
def test_anomaly_tables_take_the_anomaly_as_positive(benchmark: str, fpr_header: str) -> None:
    metrics = {"auroc": 0.9, "aupr_out": 0.07, "fpr95_tpr_in": 0.5, "fpr95_tpr_out": 0.3}
    metrics |= {"ece": 0.05, "miou": 0.4, "pixel_accuracy": 0.8}
    header = main_table(_results(benchmark, metrics)).splitlines()[0].split(" | ")
    assert header[1:4] == ["AUROC %", "AUPR-out %", fpr_header]


@pytest.mark.slow
def test_a_fixture_runs_end_to_end_with_the_cpu_config(tmp_path: Path) -> None:
    _write_streethazards(tmp_path / "data")
    raw = yaml.safe_load(config_text("streethazards-cpu")[0])
    raw["model"]["options"]["width"] = 4
    raw["train"]["epochs"] = 1
    # the shipped tradi_modes row (PSPNet's classifier before its upsampling), one epoch short
    modes = {**raw["methods"]["tradi_modes"], "epochs_per_cycle": 1}
    raw["methods"] = {"mcp": {}, "tradi_modes": modes}
    benchmark = load_benchmark("streethazards", tmp_path / "data", checksums=SKIP)
    results = run_experiment(
        config_from_dict(raw), tmp_path / "out", progress=False, benchmark=benchmark
    )
    rows = {pair["rows"][0]["key"]: pair["rows"][0]["metrics"] for pair in results["pairs"]}
    assert set(rows) == {"mcp", "tradi_modes"}
    for metrics in rows.values():
        assert {"auroc", "aupr_out", "fpr95_tpr_out", "miou"} <= set(metrics)
    assert "anomaly pixels positive" in (tmp_path / "out" / "report.md").read_text()


def test_download_unpacks_the_published_tars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: dict[str, bytes]
) -> None:
    """The tars unpack train/ and test/; download=True fetches them (here from a local server)."""
    _write_streethazards(tmp_path / "published")
    for part in ("train", "test"):
        archive = tmp_path / f"streethazards_{part}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(tmp_path / "published" / "streethazards" / part, arcname=part)
        serve[archive.name] = archive.read_bytes()
        source = Archive(serve["base"].decode() + archive.name, None, part)
        monkeypatch.setitem(DOWNLOADS, f"streethazards/{part}", source)
    bench = load_benchmark("streethazards", tmp_path / "data", download=True)
    expected = load_benchmark("streethazards", tmp_path / "published", checksums=SKIP)
    torch.testing.assert_close(bench.test.y, expected.test.y)
    assert len(bench.train) == 3
