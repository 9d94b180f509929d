"""Foreign sources on a Hub: PEFT and AdapterHub repos served by the test Hub server (the real
`huggingface_hub` client over HTTP), composed by `hf://org/name@rev`, pinned to their commit, re-checked on load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers import ADAPTERHUB_FIXTURES, TRAIN, alone_vs_library, invoke, peft_lora
from hubserver import TOKEN

pytestmark = pytest.mark.usefixtures("hf_env")  # an isolated HF cache and token, never the real Hub


def upload(server: Any, folder: Path, repo_id: str) -> str:
    """Publish a folder as another library's user would (HfApi.upload_folder, no scalearn involved)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=server.url, token=TOKEN)
    api.create_repo(repo_id, exist_ok=True)
    return api.upload_folder(folder_path=str(folder), repo_id=repo_id).oid


def test_an_adapterhub_repo_composes_from_the_hub_exactly(hub_server, tmp_path):
    from scalearn_cli.resolve import Resolver

    adapter = tmp_path / "ah"
    shutil.copytree(ADAPTERHUB_FIXTURES / "bert" / "adapter", adapter)
    (adapter / "._adapter_config.json").write_bytes(b"\x00\x05\x16\x07")  # as on AdapterHub's own repos
    commit = upload(hub_server, adapter, "AdapterHub/tiny-bert-task_pfeiffer")
    assert any(p.suffix == ".bin" for p in adapter.iterdir())  # pickled tensors: read with weights_only only
    source = Resolver(endpoint=hub_server.url).source(f"hf://AdapterHub/tiny-bert-task_pfeiffer@{commit}")
    assert (source.ref.registry, source.ref.revision, source.ref.format) == (hub_server.url, commit, "adapterhub")
    assert "pytorch_adapter.bin" in source.ref.files and "._adapter_config.json" not in source.ref.files
    alone_vs_library(source, "bert", "scalearn-uniform")


def test_transfer_pins_a_peft_hub_repo_and_refuses_a_changed_file(hub_server, tmp_path, tiny_model_dir):
    from huggingface_hub import constants

    foreign = peft_lora(tmp_path / "peft", tiny_model_dir, 11)
    commit = upload(hub_server, foreign, "someone/sst2-lora")
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"sentence": f"the movie was {w}", "label": i % 2}) + "\n"
                            for i, w in enumerate(["good", "bad"] * 20)))
    out = tmp_path / "composed"
    data = ["--task", "custom", "--data-file", task, "--text-fields", "sentence"]
    result = invoke("transfer", *data, "--source", "hf://someone/sst2-lora", "--endpoint", hub_server.url,
                    *TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "composition.json").read_text())["sources"][0]
    assert (record["id"], record["revision"], record["registry"], record["format"]) == (
        "someone/sst2-lora", commit, hub_server.url, "peft")
    upload(hub_server, peft_lora(tmp_path / "newer", tiny_model_dir, 12), "someone/sst2-lora")  # main moves on
    before = invoke("eval", out, "--endpoint", hub_server.url, "--json")
    assert before.exit_code == 0, before.output  # still the pinned commit
    refused = invoke("eval", out, "--json")  # HF_ENDPOINT points elsewhere: the record may not choose the host
    assert refused.exit_code == 1 and "not your configured Hub endpoint" in refused.stderr

    stored = hub_server.state.blob_path("someone/sst2-lora", commit, "adapter_model.safetensors")
    data_bytes = bytearray(stored.read_bytes())
    data_bytes[-2] ^= 0x01
    stored.write_bytes(bytes(data_bytes))
    shutil.rmtree(constants.HF_HUB_CACHE, ignore_errors=True)  # a fresh machine: it must download again
    changed = invoke("eval", out, "--endpoint", hub_server.url)
    assert changed.exit_code == 1 and "tampered" in changed.stderr


@pytest.mark.parametrize("missing", ["nobody/nothing", "someone/sst2-lora@v9"])
def test_a_missing_hub_repo_or_revision_is_one_line(hub_server, tmp_path, missing):
    result = invoke("transfer", "--task", "rte", "--source", f"hf://{missing}", "--endpoint", hub_server.url,
                    "--out", tmp_path / "x")
    assert result.exit_code == 1 and result.stderr.count("Error") == 1 and not (tmp_path / "x").exists()


def test_zoo_lists_the_published_adapterhub_sources():
    from scalearn_cli.zoo.catalog import load_published

    rows = load_published("roberta-base")
    by_task = {r["task"]: r for r in rows if r["task"] and r["repo_id"].endswith("_pfeiffer")}
    assert {"rte", "mnli", "qnli", "qqp", "sst2", "stsb", "mrpc", "cola", "boolq", "cb"} <= set(by_task)
    rte = by_task["rte"]
    assert rte["confirmed"] and rte["source"] == "hf://AdapterHub/roberta-base-rte_pfeiffer@9d61be9bf0254916939575c64aa7ca6c0675249d"
    assert all(r["kind"] == "bottleneck" and r["format"] == "adapterhub" for r in rows)
    assert all(r["revision"] is None for r in rows if not r["confirmed"])  # never a made-up commit
    listed = json.loads(invoke("zoo", "list", "--published", "--json").stdout)
    assert {r["source"] for r in listed} == {r["source"] for r in rows}
