"""Loading checkpoints safely, task vectors, in-place merging and export."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mapframe.errors import CheckpointError, ConfigError  # noqa: E402
from mapframe.merging import Merger, TaskArithmetic, TaskVectors, load_state_dict  # noqa: E402
from mapframe.merging.checkpoints import save_state_dict  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = torch.nn.Linear(3, width)
        self.bn = torch.nn.BatchNorm1d(width)
        self.head = torch.nn.Linear(width, 2)


def _sd(seed, width=4):
    torch.manual_seed(seed)
    return Net(width).state_dict()


def test_safetensors_and_torch_state_dicts(tmp_path):
    sd = _sd(0)
    save_state_dict(sd, tmp_path / "a.safetensors")
    torch.save(sd, tmp_path / "b.pt")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "c.ckpt")
    for name in ("a.safetensors", "b.pt", "c.ckpt"):
        loaded = load_state_dict(tmp_path / name)
        assert set(loaded) == set(sd)
        for k in sd:
            torch.testing.assert_close(loaded[k], sd[k])


def test_pickled_module_is_read_without_running_code(tmp_path):
    net = Net()
    net.register_buffer("scratch", torch.ones(2), persistent=False)
    torch.save(net, tmp_path / "finetuned.pt")  # task_vectors-style whole-module pickle
    with pytest.raises(Exception):  # noqa: B017 - torch's own refusal, whatever its type
        torch.load(tmp_path / "finetuned.pt", weights_only=True)
    loaded = load_state_dict(tmp_path / "finetuned.pt")
    assert set(loaded) == set(net.state_dict())  # non-persistent buffers left out
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded[k], v)
    torch.save({"model": net, "epoch": 2}, tmp_path / "wrapped.pt")
    assert set(load_state_dict(tmp_path / "wrapped.pt")) == set(net.state_dict())


def test_pickled_module_of_an_unimportable_class(tmp_path, monkeypatch):
    import importlib
    import sys

    mod_dir = tmp_path / "src"
    mod_dir.mkdir()
    (mod_dir / "gone_modeling.py").write_text(
        "import torch\n"
        "class ImageEncoder(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())\n"
        "        self.note = {'preprocess': print}\n"
    )
    monkeypatch.syspath_prepend(str(mod_dir))
    enc = importlib.import_module("gone_modeling").ImageEncoder()
    torch.save(enc, tmp_path / "enc.pt")
    expected = enc.state_dict()
    del sys.modules["gone_modeling"]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(mod_dir)])
    with pytest.raises(ModuleNotFoundError):  # a full unpickle needs the class
        torch.load(tmp_path / "enc.pt", weights_only=False)
    loaded = load_state_dict(tmp_path / "enc.pt")
    assert set(loaded) == {"model.0.weight", "model.0.bias"} == set(expected)
    torch.testing.assert_close(loaded["model.0.weight"], expected["model.0.weight"])


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch mapframe-pwned",))


def test_code_in_a_pickle_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"payload": _Evil(), "w": torch.ones(2)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refused to unpickle.*allow_pickle"):
        load_state_dict(tmp_path / "evil.pt")
    assert not (tmp_path / "mapframe-pwned").exists()
    # A module tree with a payload inside: tensors are read, the payload is not run.
    net = Net()
    net.payload = _Evil()
    torch.save(net, tmp_path / "evil-module.pt")
    loaded = load_state_dict(tmp_path / "evil-module.pt")
    assert set(loaded) == set(Net().state_dict())
    assert not (tmp_path / "mapframe-pwned").exists()


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("missing.safetensors", None, "checkpoint not found"),
        ("bad.safetensors", b"not a safetensors file", "not a readable safetensors"),
        ("bad.pt", b"garbage",
         "not a checkpoint|not a readable torch checkpoint|refused to unpickle"),
        ("weights.npz", b"x", "unknown checkpoint format"),
    ],
)
def test_unreadable_checkpoints(tmp_path, name, content, match):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_state_dict(p)


def test_mismatched_keys_and_shapes():
    base = _sd(0)
    other = dict(_sd(1))
    other.pop("head.bias")
    with pytest.raises(CheckpointError, match=r"missing: \['head.bias'\]"):
        TaskVectors(base, [_sd(1), other], ["a", "b"])
    with pytest.raises(CheckpointError, match=r"'fc.weight' has shape \(5, 3\)"):
        TaskVectors(base, [_sd(1, width=5)], ["a"])


def test_task_vectors_and_in_place_merge():
    base, fts = _sd(0), [_sd(1), _sd(2)]
    tv = TaskVectors(base, fts, ["a", "b"])
    assert "bn.num_batches_tracked" not in set(tv.keys())  # integer buffers are not merged
    torch.testing.assert_close(tv.vectors("fc.weight")[1], fts[1]["fc.weight"] -
                               base["fc.weight"])
    merger = Merger(TaskArithmetic(), tv)
    model = Net()
    params = merger.resident_params(model)
    ptr = model.fc.weight.data_ptr()
    c = np.array([0.3, 0.6])
    with torch.no_grad():
        merger.merge_into(params, c)
    assert model.fc.weight.data_ptr() == ptr  # written in place, no new model
    for k in params:
        expect = base[k] + 0.3 * (fts[0][k] - base[k]) + 0.6 * (fts[1][k] - base[k])
        torch.testing.assert_close(model.state_dict()[k], expect)
    with pytest.raises(ConfigError, match="got 3 coefficients for 2 task vectors"):
        merger.merge_into(params, np.ones(3))
    with pytest.raises(ConfigError, match="finite"):
        merger.merge_into(params, np.array([np.nan, 1.0]))


def test_resident_model_must_match_checkpoints():
    tv = TaskVectors(_sd(0), [_sd(1)], ["a"])
    merger = Merger(TaskArithmetic(), tv)
    with pytest.raises(CheckpointError, match="another architecture"):
        merger.resident_params(Net(width=5))


def test_export_round_trip(tmp_path):
    base, fts = _sd(0), [_sd(1), _sd(2)]
    merger = Merger(TaskArithmetic(), TaskVectors(base, fts, ["a", "b"]))
    path = merger.export(tmp_path / "m.safetensors", np.array([1.0, 0.0]))
    merged = load_state_dict(path)
    for k in base:
        torch.testing.assert_close(merged[k], fts[0][k] if k != "bn.num_batches_tracked"
                                   else base[k])
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    assert '"a": 1.0' in meta["mapframe.coefficients"]


def test_bf16_dtype_preserved():
    base = {k: v.to(torch.bfloat16) for k, v in _sd(0).items() if v.is_floating_point()}
    ft = {k: v.to(torch.bfloat16) for k, v in _sd(1).items() if v.is_floating_point()}
    merger = Merger(TaskArithmetic(), TaskVectors(base, [ft], ["a"]))
    out = merger.merged_state_dict(np.array([0.5]))
    assert all(v.dtype == torch.bfloat16 for v in out.values())


def test_a_merge_does_not_depend_on_its_batch_or_thread_count():
    # Executors batch the same jobs differently; every row must come out bit for bit the same.
    g = torch.Generator().manual_seed(3)
    base = {"w": torch.randn(300, 257, generator=g), "b": torch.randn(4097, generator=g)}
    fts = [{k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
           for _ in range(3)]
    merger = Merger(TaskArithmetic(), TaskVectors(base, fts))
    C = np.random.default_rng(0).uniform(-0.5, 1.5, (20, 3))
    threads = torch.get_num_threads()
    outs = []
    try:
        for n_threads, rows in ((1, slice(0, 20)), (2, slice(0, 20)), (2, slice(5, 15)),
                                (4, slice(7, 8))):
            torch.set_num_threads(n_threads)
            out = {k: torch.empty((rows.stop - rows.start, *v.shape)) for k, v in base.items()}
            merger.merge_batch(C[rows], out)
            outs.append((rows, out))
            single = {k: torch.empty(v.shape) for k, v in base.items()}
            merger.merge_into(single, C[rows.start])
            assert all(torch.equal(single[k], out[k][0]) for k in base)
    finally:
        torch.set_num_threads(threads)
    ref = outs[0][1]
    for rows, out in outs[1:]:
        for k in base:
            assert torch.equal(out[k], ref[k][rows.start:rows.stop])


def test_fingerprint_does_not_depend_on_torch_thread_count():
    """A float32 sum's rounding depends on how torch splits it over threads; the fingerprint
    must not, or a study resumed under another thread count looks like a different one."""
    import torch

    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(300_000, generator=g), "b": torch.randn(85_000, generator=g)}
    tuned = [{k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
             for _ in range(2)]
    tv = TaskVectors(base, tuned)
    before = torch.get_num_threads()
    try:
        prints = []
        for threads in (1, 2, 3, 4):
            torch.set_num_threads(threads)
            prints.append(tv.fingerprint())
    finally:
        torch.set_num_threads(before)
    assert all(p == prints[0] for p in prints), prints


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_merges_are_rounded_once(dtype):
    """Task vectors kept in the checkpoint's dtype were rounded before the merge rounded
    again: c = e_i missed θ_i in 6.5 % of bf16 entries. Now θ_i comes back bit for bit, and
    a mixed merge equals a float64 reference rounded once (but for float32 accumulation)."""
    g = torch.Generator().manual_seed(7)
    dt = getattr(torch, dtype)
    base = {"w": torch.randn(256, 64, generator=g).to(dt), "b": torch.randn(777, generator=g)
            .to(dt)}
    fts = [{k: (v.float() + 0.02 * torch.randn(v.shape, generator=g)).to(dt)
            for k, v in base.items()} for _ in range(3)]
    merger = Merger(TaskArithmetic(), TaskVectors(base, fts, ["a", "b", "c"]))
    for i in range(3):
        c = np.zeros(3)
        c[i] = 1.0
        out = merger.merged_state_dict(c)
        for k in base:
            assert out[k].dtype == dt
            assert torch.equal(out[k], fts[i][k]), (i, k)
    c = np.array([0.3, 0.55, 0.8])
    out = merger.merged_state_dict(c)
    for k in base:
        ref = base[k].double() + sum(float(ci) * (ft[k].double() - base[k].double())
                                     for ci, ft in zip(c, fts))
        off = (out[k] != ref.to(dt)).float().mean().item()
        assert off < 0.002, off


def test_export_without_a_suffix_refuses_to_replace_a_users_file(tmp_path):
    """The appended ``.safetensors`` was written without the overwrite check."""
    base, fts = _sd(0), [_sd(1)]
    merger = Merger(TaskArithmetic(), TaskVectors(base, fts, ["a"]))
    mine = save_state_dict(base, tmp_path / "mine.safetensors")
    before = mine.read_bytes()
    with pytest.raises(ConfigError, match="not an earlier mapframe export") as err:
        merger.export(tmp_path / "mine", np.array([0.5]))
    assert "\n" not in str(err.value)
    assert mine.read_bytes() == before
    out = merger.export(tmp_path / "m", np.array([0.5]))
    assert merger.export(tmp_path / "m", np.array([0.2])) == out  # its own export: replaced



@pytest.mark.parametrize("name", ["m.pt", "m.bin", "m.pth", "m.ckpt", "m.PT", "m.gguf"])
def test_export_refuses_a_torch_suffix_it_would_not_honour(tmp_path, name):
    """A path ending in .pt or .bin got a safetensors file under that name, which torch.load
    cannot read."""
    merger = Merger(TaskArithmetic(), TaskVectors(_sd(0), [_sd(1)], ["a"]))
    with pytest.raises(ConfigError, match=r"writes safetensors.*\.safetensors") as err:
        merger.export(tmp_path / name, np.array([0.5]))
    assert "\n" not in str(err.value)
    assert not (tmp_path / name).exists()


def test_float64_checkpoints_merge_in_float64():
    """Task arithmetic accumulated float64 checkpoints in float32: c = 0 missed θ0 and
    c = e_i missed θ_i by about 1e-7. Now θ0 is exact and θ_i within float64 rounding
    (θ0 + (θ_i − θ0) is not always θ_i in binary floating point)."""
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(16, 16, generator=g, dtype=torch.float64)}
    fts = [{"w": base["w"] + 1e-3 * torch.randn(16, 16, generator=g, dtype=torch.float64)}
           for _ in range(2)]
    merger = Merger(TaskArithmetic(), TaskVectors(base, fts, ["a", "b"]))
    out = merger.merged_state_dict(np.zeros(2))
    assert out["w"].dtype == torch.float64 and torch.equal(out["w"], base["w"])
    for i in range(2):
        c = np.zeros(2)
        c[i] = 1.0
        torch.testing.assert_close(merger.merged_state_dict(c)["w"], fts[i]["w"], rtol=0,
                                   atol=1e-15)
    c = np.array([0.25, 0.5])  # float32-exact: the coefficients themselves are float32
    ref = base["w"] + sum(ci * (ft["w"] - base["w"]) for ci, ft in zip(c, fts))
    torch.testing.assert_close(merger.merged_state_dict(c)["w"], ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("wrapped", [
    lambda sd: {"model": sd, "epoch": 3},  # timm / DeiT / MAE
    lambda sd: {"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": {}},  # tutorial
    lambda sd: {"module": sd},  # DeepSpeed
    lambda sd: {"state_dict": sd, "epoch": 1},  # Lightning
])
def test_common_checkpoint_wrappers_are_unwrapped(tmp_path, wrapped):
    """Only {"state_dict": ...} was unwrapped; {"model": sd} and {"model_state_dict": sd}
    said "the checkpoint holds no tensors". The weights read, and their identity, are the
    same as for the bare state dict."""
    sd, ft = _sd(0), _sd(1)
    torch.save(sd, tmp_path / "bare.pt")
    torch.save(wrapped(sd), tmp_path / "wrapped.pt")
    torch.save(ft, tmp_path / "ft.pt")
    out = load_state_dict(tmp_path / "wrapped.pt")
    assert sorted(out) == sorted(sd) and all(torch.equal(out[k], sd[k]) for k in sd)
    bare = TaskVectors.from_files(tmp_path / "bare.pt", {"a": tmp_path / "ft.pt"})
    unwrapped = TaskVectors.from_files(tmp_path / "wrapped.pt", {"a": tmp_path / "ft.pt"})
    assert bare.fingerprint() == unwrapped.fingerprint()


def test_nested_state_dicts_mapframe_cannot_pick_are_named(tmp_path):
    sd = _sd(0)
    torch.save({"ema": sd, "epoch": 3}, tmp_path / "ema.pt")
    with pytest.raises(CheckpointError, match=r"no tensors at its top level.*'ema' holds "
                       r"\d+ tensors.*torch.save\(checkpoint\['ema'\], path\)") as err:
        load_state_dict(tmp_path / "ema.pt")
    assert "\n" not in str(err.value)
    torch.save({"model": sd, "state_dict": _sd(1)}, tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match=r"'model' and 'state_dict'") as err:
        load_state_dict(tmp_path / "two.pt")
    assert "\n" not in str(err.value)


def test_a_folder_given_as_a_checkpoint_says_it_is_a_folder(tmp_path):
    """An existing Hugging Face model folder was reported as "checkpoint not found"."""
    folder = tmp_path / "hf"
    save_state_dict(_sd(0), folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file.*"
                       r"model\.safetensors.*LLM plugin") as err:
        load_state_dict(folder)
    assert "\n" not in str(err.value) and "not found" not in str(err.value)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_state_dict(tmp_path / "missing.pt")
