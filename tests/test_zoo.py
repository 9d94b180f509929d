"""The zoo: the shelf's tasks load by name from their files, built sources ship in a registry beside the catalog
(or are the benchmark's own, ``prebuilt``), ``zoo:NAME`` composes one by its task name and re-resolves in any
clone, and each recipe's majority baseline is computed from its data and recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import make_source
from typer.testing import CliRunner

from scalearn_cli.cli.main import app
from scalearn_cli.data.demo import write_demo_tasks

SHELF = Path(__file__).resolve().parents[2] / "shared" / "data" / "shelf"
TRAIN = ["--epochs", "1", "--batch-size", "8", "--max-length", "16"]


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def ok_json(result: Any) -> Any:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return json.loads(result.stdout)


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
