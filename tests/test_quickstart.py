"""The quickstart: its closing summary, the plain-PEFT source it makes, and (slow) the whole run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import QUICKSTART_METHODS, fake_result, invoke



@pytest.mark.parametrize("plot", [None, "qs/transfer/scalearn++-omega.png"])
def test_the_closing_summary_fits_one_screen_and_names_every_part(capsys, plot):
    from scalearn_cli.cli.quickstart import render

    render(fake_result(Path("qs"), plot))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) <= 48, out
    assert max(len(line) for line in lines) <= 80, out
    assert "demo-paraphrase's own full-data adapter is not on it" in out
    assert "zoo source" not in out  # the old row that showed the target's full-data adapter beside the comparison
    assert "#2 demo-nli (61.0 acc on it): LoRA saved by plain PEFT (no scalearn.json)" in out
    assert "qs/sources/demo-nli-peft" in out
    assert "scalearn-zoo/minilm-l6-demo-sentiment-lora@aaaaaaaaaaaa" in out  # commit shortened for the screen
    for method in QUICKSTART_METHODS:
        assert re.search(rf"{re.escape(method)}\s", out), method
    assert "1,774,080" in out and "148,610-parameter head" in out
    assert re.search(r"AdapterSoup \(k=1\)\s+│ 2 │", out) and "chose 1 of the other 2" in out
    assert "ω of scalearn++" in out and "scalearn inspect qs/transfer/scalearn++" in out
    assert re.search(r"#1 demo-sentiment\s+20\.0%\s+mean ω 0\.400", out)
    assert ("heatmap: qs/transfer/scalearn++-omega.png" in out) == (plot is not None)
    assert "export --format merged, verify: max |Δlogit| = 4.2e-07 on 64 examples, ok" in out
    assert "--data-dir DIR/glue/rte" in out and "nyu-mll/glue" in out and "--model roberta-base" in out


def test_the_next_commands_use_options_that_exist():
    from scalearn_cli.quickstart import next_steps

    commands = [line.split() for line in next_steps(Path("qs")) if line.startswith("scalearn ")]
    assert {c[1] for c in commands} >= {"zoo", "train-source", "transfer"}
    for words in commands:
        sub = words[1:3] if words[1] == "zoo" else words[1:2]
        help_text = invoke(*sub, "--help").output
        for option in (w for w in words if w.startswith("--")):
            assert option in help_text, f"{' '.join(sub)} has no {option}"


def test_a_plain_peft_lora_made_for_the_quickstart_is_read_as_peft(tmp_path, tiny_model_dir):
    from scalearn_cli.data.demo import write_demo_tasks
    from scalearn_cli.demo_peft import train_peft_lora
    from scalearn_cli.resolve import Resolver

    data = write_demo_tasks(tmp_path / "demo")["demo-nli"]
    out = tmp_path / "nli-peft"
    info = train_peft_lora(data, out, str(tiny_model_dir), str(tiny_model_dir), ("sentence1", "sentence2"), 3,
                           epochs=1, batch_size=64, max_length=16)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(info["files"])
    assert "scalearn.json" not in info["files"]
    assert info["train_examples"] == 600 and info["parameters"] == 2 * 2 * (32 * 8 + 8 * 32)
    assert 0.0 <= info["validation_accuracy"] <= 1.0
    source = Resolver().source(str(out))
    assert source.ref.format == "peft" and source.meta.adapter.kind == "lora"


@pytest.mark.slow
def test_the_quickstart_runs_offline_and_its_json_has_every_row(tmp_path, monkeypatch, minilm_dir):
    """The whole quickstart at 1 epoch on 16 examples (the zoo source keeps its recipe: ~2-4 minutes on 2 CPUs)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SCALEARN_REGISTRY", str(tmp_path / "registry"))
    result = invoke("quickstart", "--workdir", tmp_path / "qs", "--epochs", "1", "--few-shot", "16", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [r["method"] for r in out["rows"]] == QUICKSTART_METHODS
    assert all(r["task"] == "demo-paraphrase" and r["train_examples"] == 16 for r in out["rows"])
    assert [r["parameters"] > 0 for r in out["rows"]] == [True, False, False, True, True, True]
    assert [r["n_sources"] for r in out["rows"]] == [1, 3, 2, 3, 3, 3]  # AdapterSoup cannot rank the PEFT folder
    assert [s["task"] for s in out["sources"]] == ["demo-paraphrase", "demo-sentiment", "demo-nli"]
    assert [s["format"] for s in out["sources"]] == ["scalearn", "scalearn", "peft"]
    assert out["sources"][1]["ref"].startswith("scalearn-zoo/minilm-l6-demo-sentiment-lora@")
    record = json.loads((tmp_path / "qs" / "transfer" / "scalearn++" / "composition.json").read_text())
    assert [s.get("format", "scalearn") for s in record["sources"]] == ["scalearn", "scalearn", "peft"]
    assert not (tmp_path / "qs" / "sources" / "demo-nli-peft" / "scalearn.json").exists()
    assert abs(sum(s["share"] for s in out["omega"]["sources"]) - 1) < 1e-6
    assert all(s["mean_omega"] > 0 for s in out["omega"]["sources"])  # ω starts at 2/N
    assert out["export"]["ok"] is True and out["export"]["max_abs_diff"] <= 1e-5
    assert any("--data-dir" in line for line in out["next"])
