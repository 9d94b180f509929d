"""Foreign adapter formats: PEFT LoRA saved by real PEFT, AdapterHub Pfeiffer adapters saved by the real library.

Parity: the tensors our readers return, applied to the plain encoder by hand, reproduce the other library's own
last_hidden_state to <= 1e-5.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from helpers import TINY, make_source
from scalearn_cli.errors import ArtifactError
from scalearn_cli.formats import adapterhub, peft_lora
from scalearn_cli.sources import bottleneck, lora

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "adapterhub"
TOL = 1e-5


# --- PEFT LoRA -------------------------------------------------------------------------------------------------


def tiny_encoder(arch: str, task: bool = False, seed: int = 0) -> nn.Module:
    """A random tiny BERT/RoBERTa from config: the bare encoder or its sequence-classification model."""
    from transformers import (BertConfig, BertForSequenceClassification, BertModel, RobertaConfig,
                              RobertaForSequenceClassification, RobertaModel)

    torch.manual_seed(seed)
    if arch == "bert":
        config = BertConfig(**TINY)
        model = BertForSequenceClassification(config) if task else BertModel(config)
    else:
        config = RobertaConfig(**TINY, pad_token_id=1)
        model = RobertaForSequenceClassification(config) if task else RobertaModel(config)
    return model.eval()


def save_peft(tmp_path: Path, model: nn.Module, safe: bool = True, **settings) -> tuple[Path, object]:
    """Attach a LoRA with real PEFT, randomize its weights, save it; returns (folder, the PEFT model)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(**settings))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    peft_model.eval()
    folder = tmp_path / "peft"
    peft_model.save_pretrained(folder, safe_serialization=safe)
    return folder, peft_model


def apply_sites(encoder: nn.Module, sites: dict[str, lora.LoraSite]) -> None:
    """Add scaling · B · A · x to each adapted Linear's output with forward hooks (our reading, applied by hand)."""
    modules = dict(encoder.named_modules())
    for path, site in sites.items():
        def hook(module, inputs, output, site=site):
            return output + site.scaling * F.linear(F.linear(inputs[0], site.a), site.b)  # (batch, seq, D_out)
        modules[path].register_forward_hook(hook)


def check_parity(plain: nn.Module, reference: nn.Module, folder: Path, batch: dict) -> tuple[float, peft_lora.LoraRead]:
    names = {name for name, _ in plain.named_modules()}
    read = peft_lora.read_lora(folder, names)
    assert read.sites.keys() == peft_lora.read_lora(folder).sites.keys()  # the prefix heuristic agrees
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
        before = plain(**batch).last_hidden_state
        apply_sites(plain, read.sites)
        got = plain(**batch).last_hidden_state
    assert (expected - before).abs().max() > 1e-3  # the LoRA matters, so parity means something
    diff = float((got - expected).abs().max())
    assert diff <= TOL, diff
    return diff, read


@pytest.mark.parametrize("arch,safe,settings", [
    ("bert", True, dict(r=4, lora_alpha=8, target_modules=["query", "value"])),
    ("roberta", False, dict(r=4, lora_alpha=16, use_rslora=True, target_modules=["query", "value"])),
    ("bert", True, dict(r=4, lora_alpha=8, target_modules=["query", "key", "value", "dense"],
                        rank_pattern={r"encoder\.layer\.0\.attention\.self\.query": 2, "intermediate.dense": 6},
                        alpha_pattern={r"layer\.\d\.output\.dense": 3, "value": 5})),
    ("roberta", True, dict(r=3, lora_alpha=5, target_modules=["query", "key", "value", "dense"])),
], ids=["plain", "rslora-bin", "patterns-attn-ffn", "attn-ffn"])
def test_peft_lora_parity(tmp_path, batch, arch, safe, settings):
    reference = tiny_encoder(arch)
    plain = copy.deepcopy(reference)
    folder, peft_model = save_peft(tmp_path, reference, safe=safe, **settings)
    assert (folder / ("adapter_model.safetensors" if safe else "adapter_model.bin")).is_file()
    diff, read = check_parity(plain, peft_model, folder, batch)
    layers = {name: m for name, m in peft_model.base_model.model.named_modules() if hasattr(m, "scaling")}
    for path, site in read.sites.items():  # rank and scaling per site, as PEFT set them
        assert site.scaling == pytest.approx(layers[path].scaling["default"])
        assert site.a.shape[0] == layers[path].r["default"]
    if "rank_pattern" in settings:
        assert read.sites["encoder.layer.0.attention.self.query"].a.shape[0] == 2
        assert read.sites["encoder.layer.1.output.dense"].scaling == pytest.approx(3 / 4)
    print(f"peft {arch} {'+'.join(settings['target_modules'])}: max |diff| {diff:.2e}")


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_peft_lora_from_task_model(tmp_path, batch, arch):
    """Saved from AutoModelForSequenceClassification: keys carry 'bert.'/'roberta.', the head is modules_to_save."""
    task = tiny_encoder(arch, task=True)
    plain = copy.deepcopy(getattr(task, arch))
    folder, peft_model = save_peft(tmp_path, task, r=4, lora_alpha=8, target_modules=["query", "value", "dense"],
                                   modules_to_save=["classifier"], task_type="SEQ_CLS")
    keys = load_file(folder / "adapter_model.safetensors")
    assert any(k.startswith(f"base_model.model.{arch}.encoder.") for k in keys)
    diff, read = check_parity(plain, getattr(peft_model.base_model.model, arch), folder, batch)
    assert "modules_to_save classifier ignored" in read.notes
    assert all(not path.startswith(arch) for path in read.sites)
    print(f"peft task-model {arch}: max |diff| {diff:.2e}")


def test_peft_lora_on_head_is_ignored_with_a_note(tmp_path):
    task = tiny_encoder("roberta", task=True)
    folder, _ = save_peft(tmp_path, task, r=2, target_modules=["query", "out_proj"])
    names = {name for name, _ in task.roberta.named_modules()}
    read = peft_lora.read_lora(folder, names)
    assert read.notes == ["LoRA on classifier.out_proj (outside the encoder) ignored"]
    assert sorted(read.sites) == [f"encoder.layer.{i}.attention.self.query" for i in range(2)]


def test_peft_adapter_name_infix_and_fan_in_fan_out(tmp_path, batch):
    reference = tiny_encoder("bert")
    plain = copy.deepcopy(reference)
    folder, peft_model = save_peft(tmp_path, reference, r=4, target_modules=["query"])
    tensors = load_file(folder / "adapter_model.safetensors")
    save_file({k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
               for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "fan_in_fan_out": True}))
    _, read = check_parity(plain, peft_model, folder, batch)
    assert read.fan_in_fan_out is True
    other = {k.replace(".lora_A.", ".lora_A.other."): v.clone() for k, v in tensors.items() if "lora_A" in k}
    save_file({**tensors, **other}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(ArtifactError, match="several adapters"):
        peft_lora.read_lora(folder)


def test_load_sites_delegates(tmp_path):
    folder, _ = save_peft(tmp_path, tiny_encoder("bert"), r=2, lora_alpha=6, target_modules=["value"])
    sites = lora.load_sites(folder)
    assert sorted(sites) == [f"encoder.layer.{i}.attention.self.value" for i in range(2)]
    assert all(isinstance(s, lora.LoraSite) and s.scaling == 3.0 for s in sites.values())


@pytest.mark.parametrize("settings,message", [
    (dict(use_dora=True), r"DoRA \(use_dora\)"),
    (dict(lora_bias=True), r"LoRA biases \(lora_bias\)"),
    (dict(bias="all"), r"base biases \(bias='all'\)"),
    (dict(target_modules=["query", "word_embeddings"]), "embedding LoRA"),
])
def test_peft_refusals(tmp_path, settings, message):
    folder, _ = save_peft(tmp_path, tiny_encoder("bert"), r=2, **{"target_modules": ["query"], **settings})
    with pytest.raises(ArtifactError, match=message):
        peft_lora.read_lora(folder)


@pytest.mark.parametrize("change,message", [
    ({"init_lora_weights": "pissa_niter_4"}, r"initialised with pissa \(init_lora_weights\), which rewrites"),
    ({"alora_invocation_tokens": [5]}, r"activated LoRA \(alora_invocation_tokens\)"),
    ({"peft_type": "LOHA"}, r"LOHA adapter \(peft_type\)"),
])
def test_peft_refusals_from_config(tmp_path, change, message):
    folder, _ = save_peft(tmp_path, tiny_encoder("bert"), r=2, target_modules=["query"])
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ArtifactError, match=message):
        peft_lora.read_lora(folder)


def test_peft_refusals_from_weights_alone(tmp_path):
    """A config that hides DoRA still fails on its magnitude vectors; lora_B biases likewise."""
    folder, _ = save_peft(tmp_path, tiny_encoder("bert"), r=2, target_modules=["query"], use_dora=True)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": False}))
    with pytest.raises(ArtifactError, match="uses DoRA"):
        peft_lora.read_lora(folder)
    tensors = {k: v for k, v in load_file(folder / "adapter_model.safetensors").items() if "magnitude" not in k}
    tensors["base_model.model.encoder.layer.0.attention.self.query.lora_B.bias"] = torch.zeros(32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    with pytest.raises(ArtifactError, match="LoRA biases"):
        peft_lora.read_lora(folder)


def test_peft_refuses_other_peft_types_and_pickles(tmp_path):
    from peft import IA3Config, get_peft_model

    folder = tmp_path / "ia3"
    ia3 = IA3Config(target_modules=["query"], feedforward_modules=[])
    get_peft_model(tiny_encoder("bert"), ia3).save_pretrained(folder)
    assert peft_lora.detect(folder)  # a PEFT folder, refused by name (not "matches no adapter format")
    with pytest.raises(ArtifactError, match=r"IA3 adapter \(peft_type\)"):
        peft_lora.read_lora(folder)
    folder, _ = save_peft(tmp_path, tiny_encoder("bert"), safe=False, r=2, target_modules=["query"])
    assert peft_lora.detect(folder)
    torch.save({"nested": {"a": torch.zeros(1)}}, folder / "adapter_model.bin")
    with pytest.raises(ArtifactError, match="flat dict of tensors"):
        peft_lora.read_lora(folder)
    torch.save({"obj": nn.Linear(1, 1)}, folder / "adapter_model.bin")  # a pickled module: weights_only refuses it
    with pytest.raises(ArtifactError, match="not a plain tensor file"):
        peft_lora.read_lora(folder)


# --- AdapterHub ------------------------------------------------------------------------------------------------


def load_base(arch: str) -> nn.Module:
    from transformers import AutoModel

    return AutoModel.from_pretrained(FIXTURES / arch / "base").eval()


def wrap(encoder: nn.Module, layers: list[dict[str, torch.Tensor] | None]) -> None:
    """Our composition's placement: AdapterOutput around each adapted layer's output block."""
    for layer, state in zip(encoder.encoder.layer, layers, strict=True):
        if state is None:
            continue
        block = bottleneck.BottleneckAdapter(encoder.config.hidden_size, state["down.weight"].shape[0])
        block.load_state_dict(state)
        layer.output = bottleneck.AdapterOutput(layer.output, block)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_adapterhub_parity(arch):
    """The library's own hidden states (recorded by make_fixture.py) from our reading of its saved adapter."""
    expected = load_file(FIXTURES / arch / "expected.safetensors")
    encoder = load_base(arch)
    folder = FIXTURES / arch / "adapter"
    assert adapterhub.detect(folder) and not peft_lora.detect(folder)
    read = adapterhub.read_adapterhub(folder, num_layers=len(encoder.encoder.layer))
    assert read.base_model_name == f"scalearn-fixtures/tiny-{arch}" and read.name == "tiny_task"
    assert [state is None for state in read.layers] == ([False, False] if arch == "bert" else [True, False])
    inputs = {k: expected[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        before = encoder(**inputs).last_hidden_state
        wrap(encoder, read.layers)
        got = encoder(**inputs).last_hidden_state
    assert (before - expected["last_hidden_state"]).abs().max() > 1e-2
    diff = float((got - expected["last_hidden_state"]).abs().max())
    assert diff <= TOL, diff
    print(f"adapterhub {arch}: max |diff| {diff:.2e}")


def test_adapterhub_import_with_leave_out_is_exact(tmp_path):
    """leave_out layers become zero adapters in our format: bottleneck.load reproduces the library exactly."""
    expected = load_file(FIXTURES / "roberta" / "expected.safetensors")
    ours = adapterhub.import_adapterhub(FIXTURES / "roberta" / "adapter", tmp_path / "ours", num_layers=2)
    config, layers = bottleneck.load_weights(ours)
    assert config["bottleneck_size"] == 4 and config["reduction_factor"] == 8
    assert all(float(t.abs().max()) == 0.0 for t in layers[0].values())
    encoder = load_base("roberta")
    bottleneck.load(encoder, ours)
    with torch.no_grad():
        got = encoder(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"]).last_hidden_state
    assert float((got - expected["last_hidden_state"]).abs().max()) <= TOL


def test_adapterhub_round_trip_is_byte_stable(tmp_path, tiny_model_dir):
    source = make_source(tmp_path / "source", tiny_model_dir, kind="bottleneck", reduction_factor=8)
    hub = adapterhub.export_adapterhub(source, tmp_path / "hub", name="rte")
    meta = json.loads((hub / "adapter_config.json").read_text())
    assert meta["model_type"] == "bert" and meta["model_class"] == "BertModel" and meta["name"] == "rte"
    assert meta["config"] == {**adapterhub.SEQ_BN, "reduction_factor": 8}
    assert adapterhub.detect(hub) and not peft_lora.detect(hub)
    back = adapterhub.import_adapterhub(hub, tmp_path / "back")
    for name in ("bottleneck_model.safetensors", "bottleneck_config.json"):
        assert (back / name).read_bytes() == (source / name).read_bytes(), name
    _, ours = bottleneck.load_weights(source)
    read = adapterhub.read_adapterhub(hub)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(ours, read.layers) for k in adapterhub.PARAMS)


@pytest.mark.parametrize("config,message", [
    ("houlsby", r"Houlsby adapter \(config.mh_adapter=true"),
    ("parallel", r"parallel adapter \(config.is_parallel=true"),
    ("prefix_tuning", r"prefix_tuning adapter \(config.architecture\)"),
])
def test_adapterhub_refuses_library_configs(config, message):
    with pytest.raises(ArtifactError, match=message):
        adapterhub.read_adapterhub(FIXTURES / "refused" / config)


@pytest.mark.parametrize("change,message", [
    ({"non_linearity": "gelu"}, r"config.non_linearity='gelu'"),
    ({"residual_before_ln": "post_add"}, r"config.residual_before_ln='post_add' \(we need True\)"),
    ({"residual_before_ln": False}, r"config.residual_before_ln=False"),
    ({"ln_after": True}, r"config.ln_after=True"),
    ({"scaling": "learned"}, r"config.scaling='learned'"),
    ({"original_ln_before": None}, r"config.original_ln_before=False"),  # absent: the library's default, False
    ({"phm_layer": True}, r"config.phm_layer=True"),
    ({"output_adapter": False}, r"config.output_adapter=False"),
])
def test_adapterhub_refuses_other_placements(tmp_path, change, message):
    folder = tmp_path / "hub"
    shutil.copytree(FIXTURES / "bert" / "adapter", folder)
    meta = json.loads((folder / "adapter_config.json").read_text())
    meta["config"].update(change)
    meta["config"] = {k: v for k, v in meta["config"].items() if v is not None}
    (folder / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=message):
        adapterhub.read_adapterhub(folder)


def test_adapterhub_checks_weights_against_leave_out(tmp_path):
    folder = tmp_path / "hub"
    shutil.copytree(FIXTURES / "bert" / "adapter", folder)
    meta = json.loads((folder / "adapter_config.json").read_text())
    meta["config"]["leave_out"] = [1]
    (folder / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="layer 1, which config.leave_out excludes"):
        adapterhub.read_adapterhub(folder)
    with pytest.raises(ArtifactError, match="AdapterHub adapter, not a PEFT one"):
        peft_lora.read_lora(folder)


ADAPTERS_CHECK = """
import sys, adapters, torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel
base, hub, inputs, out = sys.argv[1:]
model = AutoModel.from_pretrained(base).eval()
adapters.init(model)
name = model.load_adapter(hub, use_safetensors=True)
model.set_active_adapters(name)
batch = load_file(inputs)
with torch.no_grad():
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
save_file({"last_hidden_state": hidden.contiguous()}, out)
"""


def test_export_loads_in_the_adapters_library(tmp_path):
    """Optional (needs the library's own venv, see make_fixture.py): SCALEARN_ADAPTERS_PYTHON=/tmp/ah/bin/python."""
    import os
    import subprocess

    python = os.environ.get("SCALEARN_ADAPTERS_PYTHON")
    if not python:
        pytest.skip("set SCALEARN_ADAPTERS_PYTHON to a python with `adapters` installed to run this check")
    encoder = load_base("bert")
    batch = load_file(FIXTURES / "bert" / "expected.safetensors")
    with torch.no_grad():
        before = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.manual_seed(3)
    blocks = bottleneck.attach(encoder, bottleneck.BottleneckSettings(reduction_factor=8))
    with torch.no_grad():
        for p in (p for block in blocks for p in block.parameters()):
            p.normal_(0, 0.3)
    bottleneck.save(tmp_path, blocks, bottleneck.BottleneckSettings(reduction_factor=8))
    hub = adapterhub.export_adapterhub(tmp_path, tmp_path / "hub", name="ours", base_model="tiny-bert")
    inputs = FIXTURES / "bert" / "expected.safetensors"
    subprocess.run([python, "-c", ADAPTERS_CHECK, str(FIXTURES / "bert" / "base"), str(hub), str(inputs),
                    str(tmp_path / "theirs.safetensors")], check=True, capture_output=True)
    with torch.no_grad():
        ours = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    theirs = load_file(tmp_path / "theirs.safetensors")["last_hidden_state"]
    assert (theirs - before).abs().max() > 1e-2  # the library did apply the exported adapter
    diff = float((ours - theirs).abs().max())
    assert diff <= TOL, diff
    print(f"export -> adapters library: max |diff| {diff:.2e}")
