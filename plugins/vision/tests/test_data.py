"""Evaluation data: task specs, class names, templates, EvalSet batching and checks,
the Fashion-MNIST reader."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mapframe_vision.data import (
    EvalSet,
    TaskSpec,
    check_numeric_folder_order,
    load_dataset,
    parse_tasks,
    resolve_class_names,
)
from mapframe_vision.heads import DEFAULT_TEMPLATES, presets, resolve_templates
from mapframe_vision.toy import (
    FASHION_MNIST_DIR,
    FASHION_NAMES,
    FashionMNIST,
    task_images,
    write_image_folder,
)
from PIL import Image

from mapframe.errors import ConfigError


def _to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.as_tensor(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 digits test images as an ImageFolder (class folders 00_zero, ..., 09_nine)."""
    x, y, names = task_images("digits", "test", limit=40, size=16)
    return write_image_folder(tmp_path_factory.mktemp("digits") / "test", x, y, names)


class _Indexed:
    """``n`` tensor images whose pixels all equal their index; labels ``labels[i]``."""

    def __init__(self, labels: list[int], classes: list[str] | None = None) -> None:
        self.labels = labels
        self.reads = 0
        if classes is not None:
            self.classes = classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.reads += 1
        return torch.full((3, 4, 4), float(i)), self.labels[i]


# -- task specs -------------------------------------------------------------------------------
def test_parse_tasks_accepts_specs_and_mappings():
    spec = TaskSpec("b", "/data/b")
    out = parse_tasks([{"name": "a", "data": "/data/a", "classnames": "folder",
                        "templates": ["a {}."], "max_samples": 5}, spec])
    assert out[0] == TaskSpec("a", "/data/a", "folder", ["a {}."], 5)
    assert out[1] is spec


@pytest.mark.parametrize("tasks, match", [
    ([{"name": "a", "data": "x", "classname": ["c"]}], r"unknown field\(s\) \['classname'\]"),
    ([{"name": "a", "data": "x"}, {"name": "a", "data": "y"}], "'a' is used twice"),
    ([{"name": "a"}], "missing 'data'"),
    ([{"name": "a", "data": None}], "missing 'data'"),
    ([{"data": "x"}], "needs a 'name'"),
    ([{"name": "", "data": "x"}], "needs a 'name'"),
    (["MNIST"], "a task must be a mapping"),
    ([], "non-empty list"),
    ("MNIST", "non-empty list"),
    ([{"name": "a", "data": "x", "max_samples": 0}], "max_samples must be a positive"),
    ([{"name": "a", "data": "x", "max_samples": True}], "max_samples must be a positive"),
    ([{"name": "a", "data": "x", "max_samples": 2.5}], "max_samples must be a positive"),
])
def test_parse_tasks_rejects(tasks, match):
    with pytest.raises(ConfigError, match=match):
        parse_tasks(tasks)


# -- class names ------------------------------------------------------------------------------
def test_class_names_from_a_list_and_a_file(tmp_path):
    spec = TaskSpec("t", "x", ["cat", "dog"])
    assert resolve_class_names(spec, None) == ["cat", "dog"]
    with pytest.raises(ConfigError, match="non-empty strings"):
        resolve_class_names(TaskSpec("t", "x", ["cat", " "]), None)
    f = tmp_path / "names.txt"
    f.write_text("  sea lake\n\nforest \nannual crop\n")
    assert resolve_class_names(TaskSpec("t", "x", str(f)), None) == [
        "sea lake", "forest", "annual crop"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(ConfigError, match="is empty"):
        resolve_class_names(TaskSpec("t", "x", str(empty)), None)
    with pytest.raises(ConfigError, match="neither a file, 'folder'"):
        resolve_class_names(TaskSpec("t", "x", str(tmp_path / "missing.txt")), None)
    with pytest.raises(ConfigError, match="must be a list"):
        resolve_class_names(TaskSpec("t", "x", 42), None)


def test_class_names_from_the_folder(tmp_path):
    root = tmp_path / "eurosat"
    for c in ("sea_lake", "annual_crop", "forest"):
        (root / c).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(root / c / "0.png")
    spec = TaskSpec("t", str(root), "folder")
    ds = load_dataset(spec, None)
    assert resolve_class_names(spec, ds) == ["annual crop", "forest", "sea lake"]
    # no classnames at all: the dataset's classes, the same way
    assert resolve_class_names(TaskSpec("t", str(root)), ds) == [
        "annual crop", "forest", "sea lake"]
    with pytest.raises(ConfigError, match="no class names"):
        resolve_class_names(TaskSpec("t", "x", "folder"), _Indexed([0, 1]))
    with pytest.raises(ConfigError, match="no class names"):
        resolve_class_names(TaskSpec("t", "x"), _Indexed([0, 1]))


def test_hidden_folders_are_no_classes(tmp_path):
    root = tmp_path / "folder"
    red = {".ipynb_checkpoints": 200, "cat": 10, "dog": 20}
    for c, r in red.items():
        (root / c).mkdir(parents=True)
        Image.new("RGB", (4, 4), color=(r, 0, 0)).save(root / c / "0.png")
    ds = load_dataset(TaskSpec("t", str(root)), _to_tensor)
    assert ds.classes == ["cat", "dog"] and len(ds) == 2
    assert [ds[i][1] for i in range(2)] == [0, 1] == ds.targets
    # each image under its own folder's label
    assert [round(float(ds[i][0][0, 0, 0]) * 255) for i in range(2)] == [10, 20]
    assert resolve_class_names(TaskSpec("t", str(root), "folder"), ds) == ["cat", "dog"]
    with pytest.raises(ConfigError, match="holds no images"):
        hidden_only = tmp_path / "hidden-only"
        (hidden_only / ".cache").mkdir(parents=True)
        (hidden_only / "cat").mkdir()
        Image.new("RGB", (4, 4)).save(hidden_only / ".cache" / "0.png")
        load_dataset(TaskSpec("t", str(hidden_only)), None)


def test_class_name_presets():
    known = presets()["classnames"]
    gtsrb = resolve_class_names(TaskSpec("signs", "x", "GTSRB"), None, known)
    assert len(gtsrb) == 43 and len(set(gtsrb)) == 43
    eurosat = resolve_class_names(TaskSpec("t", "x", "EuroSAT"), None, known)
    assert len(eurosat) == 10 and len(set(eurosat)) == 10
    assert resolve_class_names(TaskSpec("MNIST", "x", "preset"), None, known) == list(
        known["MNIST"])
    assert len(known["MNIST"]) == 10
    with pytest.raises(ConfigError, match="no class-name preset 'mytask'"):
        resolve_class_names(TaskSpec("mytask", "x", "preset"), None, known)


# -- templates --------------------------------------------------------------------------------
def test_templates_presets_and_default():
    resisc = resolve_templates("aerial", "RESISC45")
    assert len(resisc) == 18 and all(t.count("{}") == 1 for t in resisc)
    assert resolve_templates("RESISC45", None) == resisc  # the preset named like the task
    assert resolve_templates("RESISC45", "preset") == resisc
    assert resolve_templates("my-task", None) == list(DEFAULT_TEMPLATES) == ["a photo of a {}."]
    assert resolve_templates("t", ["a {} here.", "{}"]) == ["a {} here.", "{}"]
    with pytest.raises(ConfigError, match="no template preset 'Nope'"):
        resolve_templates("t", "Nope")
    with pytest.raises(ConfigError, match="no template preset 'my-task'"):
        resolve_templates("my-task", "preset")
    for bad in (["a photo."], ["{} and {}"]):
        with pytest.raises(ConfigError, match=r"exactly one '\{\}'"):
            resolve_templates("t", bad)
    with pytest.raises(ConfigError, match="non-empty list"):
        resolve_templates("t", [])


# -- datasets ---------------------------------------------------------------------------------
def test_load_dataset_errors(tmp_path):
    with pytest.raises(ConfigError, match="image folder not found"):
        load_dataset(TaskSpec("t", str(tmp_path / "nope")), None)
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "0.png")
    with pytest.raises(ConfigError, match="no class sub-folders"):
        load_dataset(TaskSpec("t", str(tmp_path / "flat")), None)
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "x.txt").write_text("x")
    with pytest.raises(ConfigError, match="holds no images"):
        load_dataset(TaskSpec("t", str(tmp_path / "noimg")), None)
    with pytest.raises(ConfigError, match="the dataset is empty"):
        load_dataset(TaskSpec("t", _Indexed([])), None)
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz'"):
        load_dataset(TaskSpec("t", {"dataset": "no_such_module_xyz:f"}), None)
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        load_dataset(TaskSpec("t", {"dataset": "mapframe_vision.toy:Nope"}), None)
    with pytest.raises(ConfigError, match="failed"):
        load_dataset(TaskSpec("t", {"dataset": "mapframe_vision.toy:FashionMNIST",
                                    "kwargs": {"bogus": 1}}), None)
    with pytest.raises(ConfigError, match="data must be"):
        load_dataset(TaskSpec("t", 3.5), None)


def test_load_dataset_from_a_factory():
    ds = load_dataset(TaskSpec("f", {"dataset": "mapframe_vision.toy:FashionMNIST",
                                     "kwargs": {"limit": 5}}), _to_tensor)
    assert len(ds) == 5
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 28, 28) and 0 <= y < 10
    assert list(ds.classes) == list(FASHION_NAMES)


# -- EvalSet ----------------------------------------------------------------------------------
def test_max_samples_is_a_fixed_random_subset():
    labels = [i % 5 for i in range(100)]
    sets = [EvalSet("t", _Indexed(labels), 5, batch_size=8, max_samples=20, preload=p)
            for p in (True, True, False)]
    idx = []
    for s in sets:
        assert len(s) == 20
        xs, ys = zip(*s.batches(torch.float32))
        x, y = torch.cat(xs), torch.cat(ys)
        i = x[:, 0, 0, 0].long()
        assert torch.equal(y, torch.as_tensor([labels[k] for k in i.tolist()]))
        idx.append(i.tolist())
    assert idx[0] == idx[1] == idx[2]  # the same images every time, preloaded or streamed
    assert idx[0] == sorted(set(idx[0]))  # distinct, in dataset order
    assert idx[0] != list(range(20))  # a random subset, not the first images
    full = EvalSet("t", _Indexed(labels), 5, max_samples=500)
    assert len(full) == 100


class _Counting:
    """A dataset wrapper that counts the items read."""

    def __init__(self, base: Any) -> None:
        self.base, self.reads = base, 0
        self.targets = base.targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        self.reads += 1
        return self.base[i]


def test_preloaded_and_streamed_batches_are_identical(digit_folder):
    from torchvision.datasets import ImageFolder

    counted: dict[str, _Counting] = {}
    sets = {}
    for mode in (True, False):
        ds = _Counting(ImageFolder(str(digit_folder), transform=_to_tensor))
        counted[str(mode)] = ds
        sets[mode] = EvalSet("digits", ds, 10, batch_size=7, preload=mode)
    reads = {k: d.reads for k, d in counted.items()}
    pre = list(sets[True].batches(torch.float32))
    streamed = list(sets[False].batches(torch.float32))
    assert [len(y) for _, y in pre] == [7] * 5 + [5]
    assert len(pre) == len(streamed)
    for (xa, ya), (xb, yb) in zip(pre, streamed):
        assert xa.dtype == torch.float32 and xa.shape[1:] == (3, 16, 16)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(sets[True].labels, sets[False].labels)
    assert sets[True].labels.tolist() == ImageFolder(str(digit_folder)).targets
    # preloaded images are decoded once; streamed ones on every pass
    assert counted["True"].reads == reads["True"]
    assert counted["False"].reads == reads["False"] + 40
    # auto: preload when it fits the limit
    auto_small = EvalSet("d", _Indexed([0, 1, 2]), 3, preload="auto", preload_limit_gb=1e-12)
    auto_big = EvalSet("d", _Indexed([0, 1, 2]), 3, preload="auto", preload_limit_gb=1.0)
    assert auto_small._images is None and auto_big._images is not None


@pytest.mark.parametrize("preload", [True, False])
def test_labels_out_of_range(preload):
    with pytest.raises(ConfigError, match="label 5 but the head has 5 classes"):
        EvalSet("t", _Indexed([0, 1, 5, 2]), 5, preload=preload)
    with pytest.raises(ConfigError, match="label -1"):
        EvalSet("t", _Indexed([0, -1, 2]), 5, preload=preload)
    ok = EvalSet("t", _Indexed([0, 4, 2]), 5, preload=preload)
    assert ok.labels.tolist() == [0, 4, 2]


def test_evalset_needs_tensors():
    class PIL:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> tuple[Any, int]:
            return Image.new("RGB", (4, 4)), 0

    with pytest.raises(ConfigError, match="yields Image, not an image tensor"):
        EvalSet("t", PIL(), 2)


# -- Fashion-MNIST ----------------------------------------------------------------------------
def test_fashion_mnist_real_files():
    ds = FashionMNIST(split="test")
    assert len(ds) == 10000
    assert ds.classes == list(FASHION_NAMES) and len(ds.classes) == 10
    assert ds.images.shape == (10000, 28, 28) and ds.images.dtype == np.uint8
    assert np.bincount(ds.targets).tolist() == [1000] * 10
    im, y = ds[0]
    assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (28, 28)
    assert y == ds.targets[0]
    small = FashionMNIST(FASHION_MNIST_DIR, split="test", transform=_to_tensor, limit=3)
    assert len(small) == 3 and small[2][0].shape == (3, 28, 28)
    assert torch.equal(small[1][0][0], torch.as_tensor(ds.images[1] / 255.0, dtype=torch.float32))


def _write_idx(path: Path, arr: np.ndarray, truncate: int = 0, magic_type: int = 0x08) -> None:
    header = struct.pack(">I", (magic_type << 8) | arr.ndim)
    header += struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(data[:len(data) - truncate])


def test_fashion_mnist_reader_on_small_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 5, 7), dtype=np.uint8)
    labels = np.array([3, 0, 9, 9, 1, 4], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    ds = FashionMNIST(str(tmp_path), split="test")
    assert len(ds) == 6
    np.testing.assert_array_equal(ds.images, images)
    assert ds.targets == labels.tolist()
    im, y = ds[2]
    assert y == 9 and im.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(im)[..., 1], images[2])

    bad = tmp_path / "bad"
    bad.mkdir()
    _write_idx(bad / "train-images-idx3-ubyte.gz", images, truncate=3)
    _write_idx(bad / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(ConfigError, match="truncated idx file"):
        FashionMNIST(str(bad), split="train")
    _write_idx(bad / "train-images-idx3-ubyte.gz", images, magic_type=0x0D)
    with pytest.raises(ConfigError, match="not an idx file"):
        FashionMNIST(str(bad), split="train")
    with pytest.raises(ConfigError, match="split must be train or test"):
        FashionMNIST(str(tmp_path), split="val")


def test_fashion_mnist_missing_names_the_package(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist") as ei:
        FashionMNIST(str(tmp_path / "nowhere"))
    assert "t10k-images-idx3-ubyte.gz" in str(ei.value)


class _FolderLike:
    """What an ImageFolder of ``<root>/<class>/<image>`` gives: ``classes`` the sorted folder
    names, each image's label its folder's index in that list."""

    def __init__(self, folders: list[str]) -> None:
        self.classes = sorted(folders)
        self.samples = [(torch.zeros(3, 4, 4), i) for i in range(len(self.classes))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Any:
        return self.samples[i]


def test_a_dataset_missing_a_class_folder_is_an_error_not_shifted_labels() -> None:
    """A validation folder without class 3 against the 10 MNIST names: every label from 3
    on pointed at the next head row, and nothing said so."""
    ds = _FolderLike([str(d) for d in range(10) if d != 3])
    with pytest.raises(ConfigError, match=r"'MNIST': the dataset has 9 classes \(0, 1, 2, 4, "
                                          r".*but the head has 10 classes"):
        EvalSet("MNIST", ds, 10, device="cpu")
    EvalSet("MNIST", _FolderLike([str(d) for d in range(10)]), 10, device="cpu")


def test_numbered_class_folders_sorted_as_text_are_an_error_with_named_classes() -> None:
    """Folders 0..42 sort as text (0, 1, 10, 11, ..., 2): with class names in numeric order
    (a preset), folder "2" got label 12 and the name of class 12."""
    with pytest.raises(ConfigError, match=r"'GTSRB': the class folders are numbers sorted as "
                                          r"text \(0, 1, 10, 11, ...\).*leading zeros \(00, 01"):
        check_numeric_folder_order("GTSRB", _FolderLike([str(d) for d in range(43)]))
    check_numeric_folder_order("GTSRB", _FolderLike([f"{d:02d}" for d in range(43)]))
    check_numeric_folder_order("MNIST", _FolderLike([str(d) for d in range(10)]))
    check_numeric_folder_order("pets", _FolderLike(["cat", "dog"]))
