"""The zoo: the shelf's tasks load by name from their files, built sources ship in a registry beside the catalog
(or are the benchmark's own, ``prebuilt``), ``zoo:NAME`` composes one by its task name and re-resolves in any
clone, and each recipe's majority baseline is computed from its data and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import TRAIN, invoke, make_source, ok, ok_json

from scalearn_cli.data.demo import write_demo_tasks

SHELF = Path(__file__).resolve().parents[2] / "shared" / "data" / "shelf"


# ---- the task table --------------------------------------------------------------------------------------
def test_every_shelf_task_has_a_family_and_tests_on_its_files_test_split() -> None:
    from scalearn_cli.shelf_tasks import SHELF_NOTES, SHELF_ROWS, family
    from scalearn_cli.tasks import TASKS

    names = [row[0] for row in SHELF_ROWS]
    assert len(names) == len(set(names)) and set(names) <= set(TASKS)
    assert all(TASKS[n].test_split == "test" and family(n) != "other" for n in names)
    assert set(SHELF_NOTES) <= set(TASKS)
    for glue in ("rte", "mrpc", "stsb", "cola", "sst2", "qnli", "wnli", "snli", "mnli", "boolq"):
        assert family(glue) != "other"


@pytest.mark.skipif(not SHELF.is_dir(), reason="needs ../shared/data/shelf")
def test_shelf_folders_load_by_name_with_their_own_test_split() -> None:
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits
    from scalearn_cli.shelf_tasks import SHELF_ROWS
    from scalearn_cli.tasks import get_task

    provenance = {t["task"]: t for t in json.loads((SHELF / "PROVENANCE.json").read_text())}
    for name in [row[0] for row in SHELF_ROWS] + ["mnli", "boolq"]:
        spec = get_task(name)
        splits = make_splits(spec, load_raw(spec, data_dir=SHELF / name))
        counts = provenance[name]["rows_after_capping"]
        # test = the files' test split (mnli/boolq: GLUE's/SuperGLUE's spec, whose test is the folder's validation)
        assert len(splits.test) == counts["test" if spec.test_split == "test" else "validation"], name
        assert len(splits.train) + len(splits.dev) == counts["train"], name
        if spec.label_names is not None:
            assert list(spec.label_names) == [str(n) for n in provenance[name]["label_names"]] or name == "paws"


# ---- shipped, prebuilt, zoo:NAME -------------------------------------------------------------------------
def write_catalog(folder: Path, base_model: Path, prebuilt: dict | None = None) -> Path:
    train = {"epochs": 1, "batch_size": 16, "max_length": 32, "seed": 1, "patience": None}
    recipes = [
        {"name": "sentiment-lora", "task": "demo-sentiment", "adapter": "lora", "settings": {"r": 4},
         "data": {"source": "demo", "max_train_samples": 48}, "train": train},
        {"name": "nli-lora", "task": "demo-nli", "adapter": "lora", "settings": {},
         "data": {"source": "demo", "max_train_samples": 48}, "train": train, "prebuilt": prebuilt},
    ]
    catalog = {"format_version": 1, "base_model": str(base_model), "namespace": "tiny-zoo", "prefix": "tiny",
               "description": "test catalog", "published": {}, "registry": "registry", "recipes": recipes}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.json"
    path.write_text(json.dumps(catalog, indent=2))
    return path


@pytest.fixture
def zoo(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalog whose sentiment recipe is built into its shipped registry and whose nli recipe is prebuilt
    in another registry (as the strong benchmark's sources are)."""
    from scalearn_cli.registry.local import LocalRegistry

    folder = tmp_path / "zoo"
    monkeypatch.setenv("SCALEARN_ZOO", str(folder))
    monkeypatch.delenv("SCALEARN_REGISTRY_KIND", raising=False)
    monkeypatch.setenv("SCALEARN_CACHE", str(tmp_path / "cache"))
    bench = LocalRegistry(tmp_path / "bench-registry")
    bench.push(make_source(tmp_path / "nli-src", tiny_model_dir, task="demo-nli"), "bench/nli-s0")
    write_catalog(folder, tiny_model_dir, prebuilt={"registry": "../bench-registry", "repo_id": "bench/nli-s0"})
    built = invoke("zoo", "build", "--model", tiny_model_dir, "--tasks", "sentiment-lora",
                   "--registry", f"local:{folder / 'registry'}", "--json")
    assert [r["action"] for r in ok_json(built)] == ["built"]
    return folder


def test_zoo_list_shows_shipped_and_prebuilt_sources_with_size(zoo: Path, tiny_model_dir: Path,
                                                                tmp_path: Path) -> None:
    rows = ok_json(invoke("zoo", "list", "--model", tiny_model_dir, "--registry", f"local:{tmp_path / 'mine'}",
                          "--json"))["recipes"]
    assert [(r["name"], r["state"], r["family"]) for r in rows] == [("sentiment-lora", "shipped", "other"),
                                                                    ("nli-lora", "shipped", "other")]
    assert rows[1]["repo_id"] == "bench/nli-s0" and rows[1]["metrics"] == {"accuracy": 50.0}
    assert all(r["bytes"] > 1000 and len(r["revision"]) == 40 for r in rows)


def test_zoo_reference_composes_and_re_resolves_from_the_catalog(zoo: Path, tiny_model_dir: Path,
                                                                  tmp_path: Path) -> None:
    from scalearn_cli.artifacts import SourceRef
    from scalearn_cli.resolve import Resolver

    demo = write_demo_tasks(tmp_path / "demo")["demo-paraphrase"]
    out = tmp_path / "composed"
    ok_json(invoke("transfer", "--model", tiny_model_dir, "--task", "demo-paraphrase", "--data-dir", demo,
                   "--max-train-samples", "32", "-s", "zoo:tiny/demo-sentiment", "-s", "zoo:tiny/nli-lora", *TRAIN,
                   "--out", out, "--json"))
    record = json.loads((out / "composition.json").read_text())
    assert [(s["ref"], s["registry"], s["id"]) for s in record["sources"]] == [
        ("zoo:tiny/demo-sentiment", "zoo:tiny", "tiny-zoo/tiny-sentiment-lora"),
        ("zoo:tiny/nli-lora", "zoo:tiny", "bench/nli-s0"),
    ]  # recorded by catalog, not by this machine's path: a clone elsewhere re-finds them
    for rec in record["sources"]:
        again = Resolver().recorded(SourceRef.from_dict(rec))
        assert again.meta.content_hash == rec["content_hash"]
    assert ok_json(invoke("eval", out, "--json"))["metrics"]


def test_zoo_reference_to_an_unbuilt_or_unknown_recipe_is_one_line(zoo: Path, tiny_model_dir: Path,
                                                                     tmp_path: Path) -> None:
    from scalearn_cli.errors import UsageError
    from scalearn_cli.resolve import Resolver

    (zoo / "registry").rename(zoo / "gone")
    with pytest.raises(UsageError, match="not built yet: run `scalearn zoo build --tasks sentiment-lora`"):
        Resolver(registry=f"local:{tmp_path / 'empty'}").source("zoo:tiny/sentiment-lora")
    with pytest.raises(UsageError, match="no recipe or task 'nope'"):
        Resolver().source("zoo:tiny/nope")


def test_zoo_build_baselines_records_the_majority_of_each_task(zoo: Path, tiny_model_dir: Path) -> None:
    from scalearn_cli.zoo.catalog import load_catalog

    done = ok_json(invoke("zoo", "build", "--model", tiny_model_dir, "--baselines", "--json"))
    assert set(done) == {"demo-sentiment", "demo-nli"} and all(0 < v["accuracy"] < 100 for v in done.values())
    catalog = load_catalog(str(tiny_model_dir))
    assert catalog.baselines["demo-nli"]["accuracy"] == pytest.approx(done["demo-nli"]["accuracy"], abs=1e-4)
    rows = ok_json(invoke("zoo", "list", "--model", tiny_model_dir, "--json"))["recipes"]
    assert rows[0]["baseline"] == catalog.baselines["demo-sentiment"]


# ---- building a catalog ----------------------------------------------------------------------------------
def write_two_recipe_catalog(folder: Path, base_model: Path, lr: float = 5e-4) -> Path:
    train = {"epochs": 1, "batch_size": 16, "max_length": 32, "seed": 1, "patience": None}
    catalog = {
        "format_version": 1, "base_model": str(base_model), "namespace": "tiny-zoo", "prefix": "tiny",
        "description": "test catalog", "published": {},
        "recipes": [
            {"name": "sentiment-lora", "task": "demo-sentiment", "adapter": "lora", "settings": {"r": 4},
             "data": {"source": "demo", "max_train_samples": 48}, "train": {**train, "lr": lr}},
            {"name": "paraphrase-bottleneck", "task": "demo-paraphrase", "adapter": "bottleneck",
             "settings": {"reduction_factor": 8}, "data": {"source": "demo", "max_train_samples": 48},
             "train": {**train, "lr": 3e-4}},
        ],
    }
    folder.mkdir(exist_ok=True)
    path = folder / "tiny.json"
    path.write_text(json.dumps(catalog, indent=2))
    return path


def test_zoo_build_skip_stale_and_list(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEARN_ZOO", str(tmp_path / "zoo"))
    monkeypatch.delenv("SCALEARN_REGISTRY_KIND", raising=False)
    write_two_recipe_catalog(tmp_path / "zoo", tiny_model_dir)
    reg = f"local:{tmp_path / 'registry'}"
    common = ["--model", tiny_model_dir, "--registry", reg]
    build = ["zoo", "build", *common, "--data-root", tmp_path / "data", "--json"]

    listed = ok_json(invoke("zoo", "list", *common, "--json"))
    assert listed["base_model"] == str(tiny_model_dir)
    assert [(r["name"], r["state"]) for r in listed["recipes"]] == [("sentiment-lora", "missing"),
                                                                      ("paraphrase-bottleneck", "missing")]
    first = ok_json(invoke(*build))
    assert [(r["repo_id"], r["action"]) for r in first] == [("tiny-zoo/tiny-sentiment-lora", "built"),
                                                            ("tiny-zoo/tiny-paraphrase-bottleneck", "built")]
    assert all(len(r["revision"]) == 40 and "accuracy" in r["metrics"] for r in first)

    second = invoke(*build)
    assert [r["action"] for r in ok_json(second)] == ["skipped", "skipped"]
    assert second.stderr.count("already built") == 2

    write_two_recipe_catalog(tmp_path / "zoo", tiny_model_dir, lr=1e-3)  # one recipe's hyperparameter changes
    states = ok_json(invoke("zoo", "list", *common, "--json"))["recipes"]
    assert [(r["name"], r["state"]) for r in states] == [("sentiment-lora", "stale"),
                                                         ("paraphrase-bottleneck", "built")]
    third = ok_json(invoke(*build))
    assert [r["action"] for r in third] == ["built", "skipped"]
    assert third[0]["revision"] != first[0]["revision"] and third[1]["revision"] == first[1]["revision"]
    assert {r["state"] for r in ok_json(invoke("zoo", "list", *common, "--json"))["recipes"]} == {"built"}

    entries = ok_json(invoke("list", "--registry", reg, "--json"))
    shown = {e["repo_id"]: (e["metadata"]["task"]["name"], e["metadata"]["base_model"]["id"],
                            e["metadata"]["adapter"]["kind"], e["metadata"]["recipe"]["name"]) for e in entries}
    assert shown == {
        "tiny-zoo/tiny-sentiment-lora": ("demo-sentiment", str(tiny_model_dir), "lora", "sentiment-lora"),
        "tiny-zoo/tiny-paraphrase-bottleneck": ("demo-paraphrase", str(tiny_model_dir), "bottleneck",
                                                "paraphrase-bottleneck"),
    }
    table = ok(invoke("list", "--registry", reg, env={"COLUMNS": "250"})).stdout
    assert "demo-sentiment" in table and "bottleneck" in table


def test_the_zoo_is_a_shelf_of_its_built_sources_recorded_by_catalog(zoo: Path, tiny_model_dir: Path,
                                                                      tmp_path: Path) -> None:
    demo = write_demo_tasks(tmp_path / "demo")["demo-paraphrase"]
    out = tmp_path / "composed"
    summary = ok_json(invoke("transfer", "--model", tiny_model_dir, "--task", "demo-paraphrase", "--data-dir", demo,
                             "--max-train-samples", "32", "--shelf", "zoo", *TRAIN, "--out", out, "--json"))
    record = json.loads((out / "composition.json").read_text())
    assert [(s["ref"], s["registry"]) for s in record["sources"]] == [
        ("zoo:tiny/sentiment-lora", "zoo:tiny"), ("zoo:tiny/nli-lora", "zoo:tiny")]  # catalog order, any clone
    assert record["shelf"]["shelves"] == ["zoo"] and summary["metrics"]
    assert ok_json(invoke("eval", out, "--json"))["metrics"]
    kept = ok_json(invoke("transfer", "--model", tiny_model_dir, "--task", "demo-paraphrase", "--data-dir", demo,
                          "--max-train-samples", "32", "--shelf", "zoo:tiny", "-s", "zoo:tiny/nli-lora",
                          "--shelf-exclude", "nli-*", *TRAIN, "--out", tmp_path / "one-more", "--json"))
    assert kept["metrics"]  # a recipe-name glob filters the zoo shelf; -s and the shelf compose together


def test_an_empty_zoo_shelf_says_how_to_build_one(zoo: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    (zoo / "registry").rename(zoo / "gone")
    (tmp_path / "bench-registry").rename(tmp_path / "gone-too")
    demo = write_demo_tasks(tmp_path / "demo")["demo-paraphrase"]
    result = invoke("transfer", "--model", tiny_model_dir, "--task", "demo-paraphrase", "--data-dir", demo,
                    "--shelf", "zoo", *TRAIN, "--out", tmp_path / "never", "--registry", f"local:{tmp_path / 'mine'}")
    assert result.exit_code != 0 and not (tmp_path / "never").exists()
    assert "--shelf zoo holds no adapter sources; build some with `scalearn zoo build`" in result.output


def test_every_shipped_source_is_scored_and_a_clone_composes_them_all(minilm_dir: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository's own zoo: each shipped source has a test score beside its majority baseline, and one
    ``--shelf zoo`` composes every shipped LoRA (pulled by commit, sha256-verified) for the rows that ship with it."""
    monkeypatch.delenv("SCALEARN_ZOO", raising=False)
    monkeypatch.delenv("SCALEARN_REGISTRY_KIND", raising=False)
    monkeypatch.setenv("SCALEARN_CACHE", str(tmp_path / "cache"))
    rows = ok_json(invoke("zoo", "list", "--registry", f"local:{tmp_path / 'mine'}", "--json"))["recipes"]
    shipped = [r for r in rows if r["state"] == "shipped"]
    assert all(r["state"] in ("shipped", "missing") for r in rows)
    for row in shipped:
        assert row["metrics"].get(row["main_metric"]) is not None and row["baseline"], row["name"]
    loras = [r for r in shipped if r["adapter"] == "lora"]
    assert len(loras) == 35  # the whole shelf: a LoRA source for each of its 35 tasks
    cr = Path(__file__).resolve().parents[1] / "zoo" / "quickstart" / "cr"
    out = tmp_path / "all"
    ok_json(invoke("transfer", "--task", "cr", "--data-dir", cr, "--shelf", "zoo", "--shelf-kind", "lora",
                   "--max-train-samples", "16", "--max-steps", "2", "--batch-size", "8", "--max-length", "32",
                   "--registry", f"local:{tmp_path / 'mine'}", "--out", out, "--json"))
    record = json.loads((out / "composition.json").read_text())
    assert [s["ref"] for s in record["sources"]] == [f"zoo:minilm-l6/{r['name']}" for r in loras]
    assert {s["registry"] for s in record["sources"]} == {"zoo:minilm-l6"}
