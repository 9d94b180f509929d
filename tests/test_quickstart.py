"""The quickstart: its closing summary, its next commands, and the whole run over a tiny stand-in of the shipped
shelf (a catalog whose sources ship in a registry beside it, with the target's rows in ``quickstart/cr``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import QUICKSTART_METHODS, WORDS, fake_result, invoke, make_source


@pytest.mark.parametrize("plot", [None, "qs/transfer/scalearn++-omega.png"])
def test_the_closing_summary_fits_one_screen_and_names_every_part(capsys, plot):
    from scalearn_cli.cli.quickstart import render

    render(fake_result(Path("qs"), plot))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) <= 48, out
    assert max(len(line) for line in lines) <= 80, out
    text = " ".join(out.split())
    assert "19 shipped LoRA sources (by id and commit, sha256-verified)" in text
    assert "sentiment sst2, mpqa, subj; nli mnli, qnli, rte, snli, scitail, anli, sick_entailment, wnli;" in text
    assert "288 train rows, 32 dev; test: 376 rows" in text
    for method in QUICKSTART_METHODS:
        assert re.search(rf"{re.escape(method)}\s", out), method
    assert re.search(r"ScaLearn\+\+\s+│ 19 │ 7/10 │\s+7,680 │ 84\.3 acc", out)
    assert "cr's own LoRA (shelf): left off the shelf; trained by the zoo on all 2,715 of its train rows" in text
    assert "148,610-parameter head" in text
    assert "ScaLearn++ − average: +3.2 points (+12 of 376 test rows, one seed)" in text
    assert "share of Σ|ω| (uniform 5.3%), top 6 of 19" in text and "scalearn inspect qs/transfer/scalearn++" in text
    assert re.search(r"sst2\s+sentiment\s+9\.0%\s+mean ω 0\.180", out)
    assert "cola" not in out.split("by family,")[0].split("top 6")[1]  # the 7th source is left to --json
    assert "by family, mean share per source: sentiment 8.0% (3), question_type 5.5% (1)," in text
    assert ("kept epoch 7 of 10 (63 steps in all); ω moved 40.0% from its start (2/N) on average; "
            "source shares 3.5–9.0%") in text
    assert "note:" not in text
    assert ("heatmap: qs/transfer/scalearn++-omega.png" in out) == (plot is not None)
    assert "export --format merged, verify: max |Δlogit| = 4.2e-07 on 64 examples, ok" in out
    assert "-s zoo:sst2" in out and "--model roberta-base" in out


def test_the_summary_says_plainly_when_omega_weighs_the_sources_alike(capsys):
    from scalearn_cli.cli.quickstart import render
    from scalearn_cli.quickstart import weighed

    result = fake_result(Path("qs"), None)
    learned = {**result["omega"]["learned"], "largest_share": 0.105, "smallest_share": 0.095}
    result["omega"].update(learned=learned, weighed=weighed(learned))
    render(result)
    text = " ".join(capsys.readouterr().out.split())
    assert "note: ω weighs the sources nearly alike (largest share 1.11× the smallest)" in text
    assert "close to their average" in text
    assert weighed({**learned, "largest_share": 0.12}) is None and weighed(None) is None


def test_the_next_commands_use_options_that_exist():
    from scalearn_cli.quickstart import next_steps

    commands = [line.split() for line in next_steps(Path("qs")) if line.startswith("scalearn ")]
    assert {c[1] for c in commands} >= {"zoo", "train-source", "transfer", "inspect"}
    for words in commands:
        sub = words[1:3] if words[1] == "zoo" else words[1:2]
        help_text = invoke(*sub, "--help").output
        for option in (w for w in words if w.startswith("--")):
            assert option in help_text, f"{' '.join(sub)} has no {option}"


def test_the_shipped_target_rows_match_their_provenance():
    import hashlib

    folder = Path(__file__).resolve().parents[1] / "zoo" / "quickstart" / "cr"
    provenance = json.loads((folder / "PROVENANCE.json").read_text())
    for name, digest in provenance["sha256"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert sum(1 for _ in (folder / "train.jsonl").open()) == 320


# ---- the whole run, over a tiny stand-in shelf ------------------------------------------------------------
@pytest.fixture
def tiny_shelf(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalog for the tiny model whose three LoRA sources (demo-sentiment, demo-nli and the target's own, cr)
    ship in a registry beside it, and 60 train + 24 test rows of a cr stand-in in ``quickstart/cr``."""
    import random

    from scalearn_cli.registry.local import LocalRegistry

    folder = tmp_path / "zoo"
    monkeypatch.setenv("SCALEARN_ZOO", str(folder))
    monkeypatch.delenv("SCALEARN_REGISTRY_KIND", raising=False)
    monkeypatch.setenv("SCALEARN_CACHE", str(tmp_path / "cache"))
    shipped, recipes = LocalRegistry(folder / "registry"), []
    for i, task in enumerate(("demo-sentiment", "cr", "demo-nli")):
        shipped.push(make_source(tmp_path / f"src-{task}", tiny_model_dir, seed=i, task=task), f"tiny/{task}")
        recipes.append({"name": f"{task}-lora", "task": task, "adapter": "lora", "settings": {}, "data": {},
                        "train": {}, "prebuilt": {"registry": "registry", "repo_id": f"tiny/{task}"}})
    catalog = {"format_version": 1, "base_model": str(tiny_model_dir), "namespace": "tiny-zoo", "prefix": "tiny",
               "description": "test catalog", "published": {}, "recipes": recipes}
    (folder / "tiny.json").write_text(json.dumps(catalog, indent=2))
    rows = random.Random(0)
    target = folder / "quickstart" / "cr"
    target.mkdir(parents=True)
    for split, n in (("train", 60), ("test", 24)):
        lines = [json.dumps({"text": " ".join(rows.choices(WORDS, k=6)), "label": i % 2}) for i in range(n)]
        (target / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_the_quickstart_composes_the_shipped_shelf_without_the_targets_own_source(tmp_path, tiny_shelf,
                                                                                  tiny_model_dir):
    result = invoke("quickstart", "--workdir", tmp_path / "qs", "--model", "tiny", "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [s["task"] for s in out["sources"]] == ["demo-sentiment", "demo-nli"]  # catalog order, cr left out
    assert out["left_out"]["task"] == "cr" and out["left_out"]["ref"].startswith("tiny/cr@")
    assert [r["method"] for r in out["rows"]] == ["cr's own LoRA (shelf)", "average (ω = 1/N)", "ScaLearn++"]
    assert [r["n_sources"] for r in out["rows"]] == [1, 2, 2]
    assert all(r["train_examples"] == 54 and r["test_examples"] == 24 for r in out["rows"][1:])
    record = json.loads((tmp_path / "qs" / "transfer" / "scalearn++" / "composition.json").read_text())
    assert [(s["ref"], s["registry"]) for s in record["sources"]] == [
        ("zoo:tiny/demo-sentiment-lora", "zoo:tiny"), ("zoo:tiny/demo-nli-lora", "zoo:tiny")]
    assert all(len(s["revision"]) == 40 for s in record["sources"])  # pinned by commit
    for method in ("average", "scalearn++"):  # trained alike: the rows differ only in ω
        meta = json.loads((tmp_path / "qs" / "transfer" / method / "scalearn.json").read_text())["training"]
        assert (meta["select_on"], meta["min_steps"], meta["head_lr"], meta["lr"]) == ("loss", 40, 1e-3, 6e-3)
    omega = out["omega"]
    assert abs(sum(s["share"] for s in omega["sources"]) - 1) < 1e-6
    assert [s["share"] for s in omega["sources"]] == sorted((s["share"] for s in omega["sources"]), reverse=True)
    assert {f["family"] for f in omega["families"]} == {"other"}
    by_hand = next(line for line in out["next"] if line.startswith("scalearn transfer"))
    assert [w for w in by_hand.split() if w.startswith("zoo:")] == [f"zoo:{s['task']}" for s in omega["sources"][:3]]
    assert omega["learned"]["epochs_run"] == 1 and omega["learned"]["steps"] == 2
    assert out["export"]["ok"] is True and out["export"]["max_abs_diff"] <= 1e-5


def test_a_catalog_without_the_target_rows_is_one_line(tmp_path, tiny_shelf):
    import shutil

    shutil.rmtree(tiny_shelf / "quickstart")
    result = invoke("quickstart", "--workdir", tmp_path / "qs", "--model", "tiny")
    assert result.exit_code != 0 and "ships no quickstart target" in result.stderr
    assert not (tmp_path / "qs").exists()


def test_few_shot_uses_k_of_the_shipped_train_rows_and_too_many_is_one_line(tmp_path, tiny_shelf):
    result = invoke("quickstart", "--workdir", tmp_path / "qs", "--model", "tiny", "--epochs", "1", "--few-shot", "20",
                    "--json")
    assert result.exit_code == 0, result.output
    assert [r["train_examples"] for r in json.loads(result.stdout)["rows"][1:]] == [20, 20]
    too_many = invoke("quickstart", "--workdir", tmp_path / "qs2", "--model", "tiny", "--few-shot", "500")
    assert too_many.exit_code != 0 and "--few-shot 500 asks for more rows" in too_many.stderr
