"""Streamed task vectors: exact merges, LoRA equal to PEFT's own merge, and every bad checkpoint
caught before evaluation with an error that names it.

The models are tiny Llama / GPT-2 networks built from configs in the test (random weights;
fine-tunes are the base plus a seeded perturbation), saved sharded with ``save_pretrained``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mapframe_llm.folders import ModelFolder
from mapframe_llm.taskvectors import bind_resident, key_aligner, load_task_vectors

from mapframe.errors import CheckpointError, ConfigError
from mapframe.merging import TaskVectors
from mapframe.merging.merger import Merger
from mapframe.merging.task_arithmetic import TaskArithmetic
from mapframe.merging.ties_dare import TiesMerging

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def llama_config(**over: int) -> transformers.LlamaConfig:
    kw = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    kw.update(over)
    return transformers.LlamaConfig(**kw)


def gpt2_config(**over: int) -> transformers.GPT2Config:
    kw = dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64,
              bos_token_id=1, eos_token_id=2)
    kw.update(over)
    return transformers.GPT2Config(**kw)


def perturbed(model: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * scale)
    return model


def save(model: torch.nn.Module, path: Path, shard: str = "12KB") -> Path:
    model.save_pretrained(path, max_shard_size=shard)
    return path


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A bf16 Llama base and two full fine-tunes, each saved in several shards."""
    root = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    cls = transformers.LlamaForCausalLM
    base = cls(llama_config()).to(torch.bfloat16)
    save(base, root / "base")
    fts = {}
    for i, name in enumerate(["fr", "ar"]):
        m = cls(llama_config()).to(torch.bfloat16)
        m.load_state_dict(base.state_dict())
        fts[name] = perturbed(m, seed=10 + i)
        save(fts[name], root / name)
    return {"root": root, "base": base, "fts": fts}


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A float32 GPT-2 (tied output layer, Conv1D layers) and two fine-tunes."""
    root = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(1)
    cls = transformers.GPT2LMHeadModel
    base = cls(gpt2_config())
    save(base, root / "base")
    fts = {}
    for i, name in enumerate(["a", "b"]):
        m = cls(gpt2_config())
        m.load_state_dict(base.state_dict())
        fts[name] = perturbed(m, seed=20 + i)
        save(fts[name], root / name)
    return {"root": root, "base": base, "fts": fts}


def resident(cls: type, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    return cls.from_pretrained(str(folder), dtype=dtype).eval()


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


# -- folders -------------------------------------------------------------------------------------

def test_sharded_folder_is_read_through_its_index(llama: dict) -> None:
    root = llama["root"]
    folder = ModelFolder(root / "base")
    assert (root / "base" / "model.safetensors.index.json").is_file()
    assert len(folder.files) >= 3
    state = llama["base"].state_dict()
    for k in folder.keys():
        assert torch.equal(folder.read(k), state[k])
    k = "model.embed_tokens.weight"
    buf = torch.empty(4096, dtype=torch.uint8)
    part = folder.read_flat(k, 40, 100, buf)
    assert torch.equal(part, state[k].reshape(-1)[40:100])


@pytest.mark.parametrize("storage,reader,threads", [("disk", "mmap", 1), ("disk", "mmap", 3),
                                                    ("disk", "pread", 3), ("ram", "mmap", 2)])
def test_unit_coefficients_reproduce_each_checkpoint_bit_for_bit(llama: dict, storage: str,
                                                                 reader: str,
                                                                 threads: int) -> None:
    root, fts = llama["root"], llama["fts"]
    before = {n: digest(root / n) for n in ["base", *fts]}
    tv = load_task_vectors(root / "base", {n: root / n for n in fts}, storage=storage,
                           chunk_elements=500, reader=reader,  # many chunks per tensor
                           threads=threads)
    model = resident(transformers.LlamaForCausalLM, root / "base", torch.bfloat16)
    params = bind_resident(model, tv)
    assert set(params) == set(tv.keys())
    merger = Merger(TaskArithmetic(), tv)
    for i, m in enumerate(fts.values()):
        merger.merge_into(params, np.eye(2)[i])
        sd = m.state_dict()
        assert all(torch.equal(params[k], sd[k]) for k in params)
        assert all(params[k].dtype == torch.bfloat16 for k in params)
    merger.merge_into(params, np.zeros(2))
    sd = llama["base"].state_dict()
    assert all(torch.equal(params[k], sd[k]) for k in params)
    # Merging writes the resident model only: the checkpoint files are untouched.
    assert {n: digest(root / n) for n in ["base", *fts]} == before


@pytest.mark.parametrize("storage,reader,threads", [("disk", "pread", 1), ("disk", "mmap", 2),
                                                    ("ram", "pread", 2)])
def test_bf16_merge_is_rounded_once_from_float32(llama: dict, storage: str, reader: str,
                                                 threads: int) -> None:
    """A bf16 merge is the exact ``θ(c)`` rounded once: within half a bf16 ulp of the
    float64 value (ties may go either way). Rounding the base's term to bf16 before
    accumulating (what ``torch.mul(bf16, scalar, out=fp32)`` does) is off by thousands of ulps
    where the terms cancel."""
    root, fts = llama["root"], llama["fts"]
    c = np.array([0.37, -0.21])  # the base's weight 1 - Σc = 0.84 is not 1
    tv = load_task_vectors(root / "base", {n: root / n for n in fts}, storage=storage,
                           chunk_elements=500, reader=reader, threads=threads)
    out = {k: torch.empty(tv.shape(k), dtype=torch.bfloat16) for k in tv.keys()}
    Merger(TaskArithmetic(), tv).merge_into(out, c)
    base_sd = llama["base"].state_dict()
    ft_sds = [m.state_dict() for m in fts.values()]
    worst = 0.0
    for k in out:
        b = base_sd[k].double()
        exact = b + sum(ci * (sd[k].double() - b) for ci, sd in zip(c, ft_sds))
        ulp = torch.ldexp(torch.ones_like(exact), torch.frexp(exact).exponent - 8)
        worst = max(worst, ((out[k].double() - exact).abs() / ulp).max().item())
    assert worst <= 0.5 + 1e-9, f"merged weights are {worst:.2f} bf16 ulps from exact"
    tv.close()


def test_streamed_merge_equals_stacked_task_vectors(gpt2: dict) -> None:
    root, fts = gpt2["root"], gpt2["fts"]
    tv = load_task_vectors(root / "base", {n: root / n for n in fts}, chunk_elements=300)
    model = resident(transformers.GPT2LMHeadModel, root / "base", torch.float32)
    params = bind_resident(model, tv)
    # The tied output layer is written once, through the input embedding.
    assert "lm_head.weight" not in params and "transformer.wte.weight" in params
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    base_sd = {k: v for k, v in gpt2["base"].state_dict().items() if k in params}
    ref = TaskVectors(base_sd, [{k: m.state_dict()[k] for k in base_sd} for m in fts.values()])
    c = np.array([0.7, -0.4])
    Merger(TaskArithmetic(), tv).merge_into(params, c)
    expected = Merger(TaskArithmetic(), ref).merged_state_dict(c)
    for k in params:
        torch.testing.assert_close(params[k], expected[k], rtol=1e-5, atol=1e-6)
    # Strategies that need the task vectors side by side get them per tensor.
    ties_stream = {k: torch.empty_like(v) for k, v in params.items()}
    Merger(TiesMerging(trim=0.5), tv).merge_into(ties_stream, c)
    ties_ref = Merger(TiesMerging(trim=0.5), ref).merged_state_dict(c)
    for k in params:
        torch.testing.assert_close(ties_stream[k], ties_ref[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reader", ["mmap", "pread"])
def test_merge_threads_give_the_same_bits_as_one_thread(llama: dict, reader: str) -> None:
    root, fts = llama["root"], llama["fts"]
    c = np.array([0.37, -0.21])
    merged = []
    for threads in (1, 4):
        tv = load_task_vectors(root / "base", {n: root / n for n in fts}, chunk_elements=700,
                               reader=reader, threads=threads)
        out = {k: torch.empty(tv.shape(k), dtype=torch.bfloat16) for k in tv.keys()}
        Merger(TaskArithmetic(), tv).merge_into(out, c)
        merged.append(out)
        # A pickled copy (what a worker process receives) merges again, threads rebuilt.
        clone = pickle.loads(pickle.dumps(tv))
        again = {k: torch.empty_like(v) for k, v in out.items()}
        Merger(TaskArithmetic(), clone).merge_into(again, c)
        assert all(torch.equal(again[k], out[k]) for k in out)
        tv.close()
        clone.close()
    assert all(torch.equal(merged[0][k], merged[1][k]) for k in merged[0])
    with pytest.raises(ConfigError, match="threads"):
        load_task_vectors(root / "base", {n: root / n for n in fts}, threads=0)


def test_a_batch_of_merges_equals_single_merges(gpt2: dict) -> None:
    root, fts = gpt2["root"], gpt2["fts"]
    tv = load_task_vectors(root / "base", {n: root / n for n in fts})
    merger = Merger(TaskArithmetic(), tv)
    C = np.array([[0.2, 0.3], [1.0, 0.0]])
    out = {k: torch.empty((2, *tv.shape(k))) for k in tv.keys()}
    merger.merge_batch(C, out)
    for b in range(2):
        single = {k: torch.empty(tv.shape(k)) for k in tv.keys()}
        merger.merge_into(single, C[b])
        assert all(torch.equal(out[k][b], single[k]) for k in single)


def test_key_aligner_follows_a_task_model_prefix() -> None:
    ref = ["embeddings.word.weight", "encoder.0.weight"]
    rename = key_aligner(ref, ["bert.embeddings.word.weight", "bert.encoder.0.weight",
                               "classifier.weight"])
    assert rename("bert.encoder.0.weight") == "encoder.0.weight"
    assert rename("classifier.weight") == "classifier.weight"
    rename = key_aligner(["model.a.weight"], ["a.weight"])
    assert rename("a.weight") == "model.a.weight"


# -- LoRA ----------------------------------------------------------------------------------------

def lora_case(root: Path, out: Path, arch: str, config: dict) -> tuple[Path, dict]:
    """A LoRA adapter with non-zero B (init_lora_weights=False) saved with PEFT, and the
    merged state dict PEFT itself computes (merge_and_unload) in float32."""
    cls = transformers.LlamaForCausalLM if arch == "llama" else transformers.GPT2LMHeadModel
    base_dir = root / "base"
    model = cls.from_pretrained(str(base_dir), dtype=torch.float32)
    pm = peft.get_peft_model(model, peft.LoraConfig(init_lora_weights=False, **config))
    pm.save_pretrained(out)
    merged = peft.PeftModel.from_pretrained(
        cls.from_pretrained(str(base_dir), dtype=torch.float32), str(out)).merge_and_unload()
    return out, merged.state_dict()


@pytest.mark.parametrize("arch,config", [
    ("llama", {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"],
               "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"v_proj": 5}}),
    ("llama", {"r": 4, "lora_alpha": 16, "target_modules": ["o_proj", "embed_tokens"],
               "use_rslora": True}),
    ("llama", {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
               "modules_to_save": ["lm_head"]}),
    ("gpt2", {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn", "c_fc"],
              "fan_in_fan_out": True}),
])
def test_lora_delta_equals_peft_merge(llama: dict, gpt2: dict, tmp_path: Path, arch: str,
                                      config: dict) -> None:
    setup = llama if arch == "llama" else gpt2
    root = setup["root"]
    adapter, expected = lora_case(root, tmp_path / "lora", arch, config)
    first = next(iter(setup["fts"]))
    tv = load_task_vectors(root / "base", {"lora": adapter, "ft": root / first})
    cls = transformers.LlamaForCausalLM if arch == "llama" else transformers.GPT2LMHeadModel
    model = resident(cls, root / "base", torch.float32)
    params = bind_resident(model, tv)
    Merger(TaskArithmetic(), tv).merge_into(params, np.array([1.0, 0.0]))
    changed = 0
    for k, v in params.items():
        torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6)
        changed += not torch.equal(v, tv.base(k).float())
    assert changed > 0  # the adapter does change the model
    assert tv.memory_cost()["low_rank_bytes"] > 0


def test_lora_adapter_for_another_base_model_is_rejected(llama: dict, tmp_path: Path) -> None:
    other = transformers.LlamaForCausalLM(llama_config(hidden_size=48))
    pm = peft.get_peft_model(other, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    pm.save_pretrained(tmp_path / "adapter")
    with pytest.raises(CheckpointError, match="another base model"):
        load_task_vectors(llama["root"] / "base", {"x": tmp_path / "adapter"})
    gpt = transformers.GPT2LMHeadModel(gpt2_config())
    peft.get_peft_model(gpt, peft.LoraConfig(r=2, target_modules=["c_attn"])).save_pretrained(
        tmp_path / "gpt_adapter")
    with pytest.raises(CheckpointError, match="another base model"):
        load_task_vectors(llama["root"] / "base", {"x": tmp_path / "gpt_adapter"})


def test_seq_cls_adapter_with_its_own_head_gets_the_merge_hint(llama: dict,
                                                                tmp_path: Path) -> None:
    """A SEQ_CLS LoRA adapter saves its new ``score`` head whole (modules_to_save): the head
    is the adapter's own module, not a sign of another base model."""
    model = transformers.LlamaForSequenceClassification.from_pretrained(
        str(llama["root"] / "base"), num_labels=3)
    pm = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=2,
                                                    target_modules=["q_proj"]))
    pm.save_pretrained(tmp_path / "adapter")
    for allow_heads in (False, True):
        with pytest.raises(CheckpointError) as info:
            load_task_vectors(llama["root"] / "base", {"x": tmp_path / "adapter"},
                              allow_heads=allow_heads)
        msg = str(info.value)
        assert "saves its own 'score.weight'" in msg and "merge_and_unload" in msg
        assert "another base model" not in msg and "\n" not in msg


def test_dora_adapter_is_rejected(llama: dict, tmp_path: Path) -> None:
    model = transformers.LlamaForCausalLM.from_pretrained(str(llama["root"] / "base"))
    pm = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"],
                                                    use_dora=True))
    pm.save_pretrained(tmp_path / "dora")
    with pytest.raises(CheckpointError, match="DoRA"):
        load_task_vectors(llama["root"] / "base", {"x": tmp_path / "dora"})


# -- bad checkpoints -----------------------------------------------------------------------------

def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_vocabulary_mismatch_is_caught_before_evaluation(llama: dict, tmp_path: Path) -> None:
    big = transformers.LlamaForCausalLM(llama_config(vocab_size=100)).to(torch.bfloat16)
    save(big, tmp_path / "resized")
    with pytest.raises(CheckpointError, match=r"vocabulary of 100 tokens.*96"):
        load_task_vectors(llama["root"] / "base", {"fr": tmp_path / "resized"})
    # Without the config's help, the embedding shape still says it.
    cfg = json.loads((tmp_path / "resized" / "config.json").read_text())
    cfg["vocab_size"] = 96
    (tmp_path / "resized" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="vocabulary sizes differ"):
        load_task_vectors(llama["root"] / "base", {"fr": tmp_path / "resized"})


def test_tokenizer_with_other_tokens_is_rejected(llama: dict, tmp_path: Path) -> None:
    base = copy(llama["root"] / "base", tmp_path / "base")
    ft = copy(llama["root"] / "fr", tmp_path / "fr")
    vocab = {f"t{i}": i for i in range(96)}
    for folder, extra in ((base, {}), (ft, {"<new>": 95})):
        (folder / "tokenizer.json").write_text(json.dumps(
            {"model": {"type": "WordLevel", "vocab": {**vocab, **extra}},
             "added_tokens": []}))
    with pytest.raises(CheckpointError, match="different tokenizer vocabulary"):
        load_task_vectors(base, {"fr": ft})


def test_other_architecture_is_rejected(llama: dict, gpt2: dict, tmp_path: Path) -> None:
    deeper = transformers.LlamaForCausalLM(llama_config(num_hidden_layers=3))
    save(deeper, tmp_path / "deeper")
    with pytest.raises(CheckpointError, match="num_hidden_layers = 3"):
        load_task_vectors(llama["root"] / "base", {"fr": tmp_path / "deeper"})
    with pytest.raises(CheckpointError, match=r"'gpt2' model.*'llama' model"):
        load_task_vectors(llama["root"] / "base", {"a": gpt2["root"] / "a"})


def test_shard_missing_from_the_folder_is_named(llama: dict, tmp_path: Path) -> None:
    ft = copy(llama["root"] / "fr", tmp_path / "fr")
    index = json.loads((ft / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (ft / shard).unlink()
    with pytest.raises(CheckpointError, match=f"shard {shard} is listed in "
                                              "model.safetensors.index.json but is not"):
        load_task_vectors(llama["root"] / "base", {"fr": ft})


def test_tensor_missing_from_the_index_is_named(llama: dict, tmp_path: Path) -> None:
    ft = copy(llama["root"] / "fr", tmp_path / "fr")
    path = ft / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    key = "model.layers.1.mlp.up_proj.weight"
    del index["weight_map"][key]
    path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"lacks tensors of the pretrained.*{key}"):
        load_task_vectors(llama["root"] / "base", {"fr": ft})
    index["weight_map"][key] = "model-00001-of-99999.safetensors"
    path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model-00001-of-99999\.safetensors is listed"):
        load_task_vectors(llama["root"] / "base", {"fr": ft})


def test_truncated_shard_is_caught_when_opened(llama: dict, tmp_path: Path) -> None:
    ft = copy(llama["root"] / "fr", tmp_path / "fr")
    shard = sorted(ft.glob("*.safetensors"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=f"{shard.name}.*truncated"):
        load_task_vectors(llama["root"] / "base", {"fr": ft})


def test_bin_only_folder_gets_a_conversion_hint(llama: dict, tmp_path: Path) -> None:
    folder = tmp_path / "binary"
    folder.mkdir()
    shutil.copy(llama["root"] / "base" / "config.json", folder)
    torch.save(llama["base"].state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safe_serialization=True"):
        load_task_vectors(folder, {"fr": llama["root"] / "fr"})


def test_missing_path_and_bad_storage(llama: dict, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_task_vectors(llama["root"] / "base", {"fr": tmp_path / "nope"})
    with pytest.raises(ConfigError, match="storage must be one of disk, ram"):
        load_task_vectors(llama["root"] / "base", {"fr": llama["root"] / "fr"},
                          storage="gpu")


def test_head_tensors_need_allow_heads(llama: dict, tmp_path: Path) -> None:
    ft = copy(llama["root"] / "fr", tmp_path / "fr")
    from safetensors.torch import save_file

    save_file({"score.weight": torch.zeros(3, 32)}, str(ft / "extra.safetensors"))
    index = json.loads((ft / "model.safetensors.index.json").read_text())
    index["weight_map"]["score.weight"] = "extra.safetensors"
    (ft / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="tensors the pretrained checkpoint lacks"):
        load_task_vectors(llama["root"] / "base", {"fr": ft})
    tv = load_task_vectors(llama["root"] / "base", {"fr": ft}, allow_heads=True)
    assert set(tv.head("fr")) == {"score.weight"}
    assert "score.weight" not in set(tv.keys())


# -- export ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_export_writes_a_folder_that_from_pretrained_loads(llama: dict, gpt2: dict,
                                                           tmp_path: Path, arch: str) -> None:
    case, cls, dtype = {"llama": (llama, transformers.LlamaForCausalLM, torch.bfloat16),
                        "gpt2": (gpt2, transformers.GPT2LMHeadModel, torch.float32)}[arch]
    root, fts = case["root"], case["fts"]
    tv = load_task_vectors(root / "base", {n: root / n for n in fts})
    merger = Merger(TaskArithmetic(), tv)
    c = np.array([0.6, 0.3])
    tv.export_merged(lambda p: merger.strategy.merge_into(p, c), tmp_path / "m",
                     {"mapframe.coefficients": '{"x": 0.6}'}, max_shard_bytes=20_000)
    out = tmp_path / "m"
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    support = {f.name for f in (root / "base").iterdir() if f.suffix != ".safetensors"
               and f.name != "model.safetensors.index.json"}
    assert "config.json" in support and support <= {f.name for f in out.iterdir()}
    assert json.loads((out / "mapframe_merge.json").read_text())["mapframe.coefficients"] == {
        "x": 0.6}
    mask = os.umask(0)
    os.umask(mask)  # every file gets the user's usual mode (safetensors writes 0600)
    assert {f.stat().st_mode & 0o777 for f in out.iterdir()} == {0o666 & ~mask}
    loaded = resident(cls, out, dtype)
    model = resident(cls, root / "base", dtype)
    params = bind_resident(model, tv)
    merger.merge_into(params, c)  # the in-place merge the evaluators use
    sd = loaded.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    assert all(v.dtype == dtype for v in sd.values() if v.is_floating_point())
    # Exporting again replaces the earlier export; a folder that is not one is refused.
    tv.export_merged(lambda p: merger.strategy.merge_into(p, np.zeros(2)), out, {})
    assert not list(out.glob("model-*.safetensors")) and (out / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".m.partial-*"))
    (tmp_path / "mine").mkdir()
    with pytest.raises(CheckpointError, match="not an earlier mapframe export"):
        tv.export_merged(lambda p: None, tmp_path / "mine", {})
    # A path ending in .safetensors gets one file, as mapframe's own loader writes.
    single = merger.export(tmp_path / "one.safetensors", c)
    from safetensors.torch import load_file

    flat = load_file(str(single))
    assert all(torch.equal(flat[k], params[k]) for k in params)


def test_pread_falls_back_to_mmap_without_preadv(llama: dict, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    """On a platform without ``os.preadv`` (Windows) the default reader maps the shards,
    and the merge is the same."""
    import os

    root, fts = llama["root"], llama["fts"]
    c = np.array([0.3, 0.5])
    with_pread = load_task_vectors(root / "base", {n: root / n for n in fts})
    assert with_pread.reader == "pread"
    monkeypatch.delattr(os, "preadv")
    without = load_task_vectors(root / "base", {n: root / n for n in fts})
    assert without.reader == "mmap"
    # Whole-tensor reads (storage: ram, heads, the kept tensors) seek and read instead.
    folder = ModelFolder(root / "base")
    sd = llama["base"].state_dict()
    assert all(torch.equal(folder.read(k), sd[k]) for k in folder.keys() if k in sd)
    folder.close()
    merged = []
    for tv in (with_pread, without):
        out = {k: torch.empty(tv.shape(k), dtype=torch.bfloat16) for k in tv.keys()}
        Merger(TaskArithmetic(), tv).merge_into(out, c)
        merged.append(out)
        tv.close()
    assert all(torch.equal(merged[0][k], merged[1][k]) for k in merged[0])
