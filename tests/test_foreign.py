"""Sources nobody trained with scalearn: a plain PEFT LoRA folder and an AdapterHub Pfeiffer adapter
compose through the same resolver, kinds and combiners, and reproduce their own libraries' outputs exactly."""

from __future__ import annotations

import json
import random

import torch
from safetensors.torch import load_file

from helpers import ADAPTERHUB_FIXTURES, TRAIN, alone_vs_library, invoke, make_source, one_hot, peft_lora


def test_a_plain_peft_lora_alone_reproduces_peft(tmp_path, tiny_model_dir, batch):
    from peft import PeftModel
    from transformers import AutoModel

    from scalearn_cli.combiners import get_combiner
    from scalearn_cli.compose import inject
    from scalearn_cli.resolve import Resolver

    folders = [peft_lora(tmp_path / "peft0", tiny_model_dir, 0, target_modules=["query", "value", "dense"],
                         use_rslora=True),
               make_source(tmp_path / "ours", tiny_model_dir, "lora", seed=1)]
    sources = [Resolver().source(str(f)) for f in folders]
    assert sources[0].ref.format == "peft" and sources[1].ref.format == "scalearn"
    encoder = AutoModel.from_pretrained(tiny_model_dir).eval()
    comp = inject(encoder, sources, get_combiner("scalearn").spec("scalearn-uniform"))
    comp.eval()
    one_hot(comp, 0, 2)
    reference = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_model_dir), str(folders[0])).eval()
    with torch.no_grad():
        diff = (encoder(**batch).last_hidden_state - reference(**batch).last_hidden_state).abs().max()
    assert float(diff) <= 1e-5


def test_an_adapterhub_adapter_in_a_composition_reproduces_the_library(tmp_path):
    """The real `adapters` library's hidden states (fixture), from a composition with ω one-hot on that source."""
    from scalearn_cli.resolve import Resolver

    source = Resolver().source(str(ADAPTERHUB_FIXTURES / "roberta" / "adapter"))  # leave_out=[0]: layer 0 has no site
    assert source.ref.format == "adapterhub" and source.meta.adapter.kind == "bottleneck"
    assert alone_vs_library(source, "roberta", "scalearn").sites == ["encoder.layer.1.output"]


def test_transfer_over_a_peft_folder_records_and_rechecks_it(tmp_path, tiny_model_dir):
    foreign = peft_lora(tmp_path / "peft", tiny_model_dir, 3)
    ours = make_source(tmp_path / "ours", tiny_model_dir, "lora", seed=4)
    rng = random.Random(0)
    rows = [{"sentence": f"the movie was {rng.choice(['good', 'bad'])}", "label": rng.randint(0, 1)} for _ in range(40)]
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "composed"
    data = ["--task", "custom", "--data-file", task, "--text-fields", "sentence"]
    result = invoke("transfer", *data, "--source", foreign, "--source", ours, *TRAIN, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    first = json.loads((out / "composition.json").read_text())["sources"][0]
    assert first["format"] == "peft" and first["id"] == str(foreign.resolve())
    assert set(first["files"]) == {"adapter_config.json", "adapter_model.safetensors"}
    assert invoke("eval", out, "--json").exit_code == 0
    weights = load_file(str(foreign / "adapter_model.safetensors"))
    from safetensors.torch import save_file

    save_file({k: v * 2 for k, v in weights.items()}, str(foreign / "adapter_model.safetensors"))
    changed = invoke("eval", out)
    assert changed.exit_code == 1 and "changed since this composition was trained" in changed.stderr


def test_foreign_sources_need_a_known_base_model_and_a_known_format(tmp_path, tiny_model_dir):
    task = ["--task", "rte"]
    unnamed = peft_lora(tmp_path / "unnamed", tiny_model_dir, 5)
    config = json.loads((unnamed / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None  # as adapters saved from a model without a name are
    (unnamed / "adapter_config.json").write_text(json.dumps(config))
    result = invoke("transfer", *task, "--source", unnamed, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "does not say which base model" in result.stderr and "--model" in result.stderr
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "weights.npz").write_bytes(b"x")
    result = invoke("transfer", *task, "--source", junk, "--out", tmp_path / "y")
    assert result.exit_code == 1 and "matches no adapter format" in result.stderr and "PEFT" in result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_peft_dora_folder_is_refused_naming_the_feature(tmp_path, tiny_model_dir):
    dora = peft_lora(tmp_path / "dora", tiny_model_dir, 6, use_dora=True)
    result = invoke("transfer", "--task", "rte", "--source", dora, "--out", tmp_path / "x")
    assert result.exit_code == 1 and "DoRA" in result.stderr


def test_model_may_replace_the_named_base_when_architecture_and_shapes_match(tmp_path, tiny_model_dir):
    import shutil

    from transformers import BertConfig, BertModel

    from helpers import TINY

    copy = tmp_path / "local-copy"
    shutil.copytree(tiny_model_dir, copy)  # the same model, held in another folder
    source = peft_lora(tmp_path / "named", tiny_model_dir, 7, base_name="someone/tiny-bert")
    rows = "".join(json.dumps({"sentence": f"a {w} film", "label": i % 2}) + "\n" for i, w in enumerate(["good", "bad"] * 16))
    (tmp_path / "t.jsonl").write_text(rows)
    data = ["--task", "custom", "--data-file", tmp_path / "t.jsonl", "--text-fields", "sentence"]
    ok = invoke("transfer", *data, "--source", source, "--model", copy, *TRAIN, "--out", tmp_path / "c", "--json")
    assert ok.exit_code == 0, ok.output
    meta = json.loads((tmp_path / "c" / "scalearn.json").read_text())
    assert meta["base_model"]["id"] == str(copy.resolve()) and meta["sources_base_model"] == "someone/tiny-bert"
    other = tmp_path / "wider"  # another architecture size: refused in one line, naming both
    BertModel(BertConfig(**{**TINY, "hidden_size": 48, "intermediate_size": 40})).save_pretrained(other)
    shutil.copy(tiny_model_dir / "tokenizer.json", other)
    shutil.copy(tiny_model_dir / "tokenizer_config.json", other)
    ours = make_source(tmp_path / "ours", tiny_model_dir, "lora", seed=8)
    refused = invoke("transfer", *data, "--source", ours, "--model", other, *TRAIN, "--out", tmp_path / "d")
    assert refused.exit_code == 1 and "hidden_size 32" in refused.stderr and "hidden_size 48" in refused.stderr
    assert not (tmp_path / "d").exists()


def test_adaptersoup_says_in_one_line_that_a_peft_folder_has_no_texts_to_rank(tmp_path, tiny_model_dir):
    """AdapterSoup ranks sources by their training texts; a plain PEFT folder records none."""
    foreign = peft_lora(tmp_path / "peft", tiny_model_dir, 7)
    ours = [make_source(tmp_path / f"ours{i}", tiny_model_dir, "lora", seed=8 + i) for i in range(2)]
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"sentence": f"the movie was {w}", "label": i % 2}) + "\n"
                            for i, w in enumerate(["good", "bad"] * 10)))
    data = ["--task", "custom", "--data-file", task, "--text-fields", "sentence"]
    result = invoke("transfer", *data, "--source", foreign, *[a for o in ours for a in ("--source", o)],
                    "--method", "adaptersoup", "--soup-k", "2", *TRAIN, "--out", tmp_path / "soup")
    assert result.exit_code == 2, result.output  # a usage error
    assert "AdapterSoup ranks sources by their training texts" in result.stderr and "(a peft folder)" in result.stderr
    assert "lacks keys" not in result.stderr
