"""The adapter zoo: catalogs of source-adapter recipes per base model, built into a registry on demand.

A catalog (``zoo/<slug>.json``) is data: base model, repo namespace, recipes, and published entries by registry.
``build`` trains what the registry does not hold yet *with the same recipe hash* and pushes it, so an interrupted
build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from scalearn_cli.artifacts import read_json, write_json
from scalearn_cli.errors import UsageError

logger = logging.getLogger(__name__)


def catalog_dirs() -> list[Path]:
    """Where catalogs are looked up: $SCALEARN_ZOO, the source checkout's zoo/, the installed share/scalearn/zoo."""
    dirs = [Path(os.environ["SCALEARN_ZOO"])] if os.environ.get("SCALEARN_ZOO") else []
    dirs.append(Path(__file__).resolve().parents[1] / "zoo")
    dirs.append(Path(sys.prefix) / "share" / "scalearn" / "zoo")
    return [d for d in dirs if d.is_dir()]


@dataclass(frozen=True)
class Recipe:
    """How to build one source adapter."""

    name: str
    task: str
    adapter: str
    data: dict[str, Any]
    train: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    pooling: str = "first"  # the head's pooling (train-source --pooling)

    def hash(self, base_model: str) -> str:
        """sha256 over everything that determines the adapter (no absolute paths)."""
        payload = {"base_model": base_model, "task": self.task, "adapter": self.adapter, "data": self.data,
                   "train": self.train, "settings": self.settings}
        if self.pooling != "first":  # recipes written before the option keep their hash
            payload["pooling"] = self.pooling
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class Catalog:
    path: Path
    base_model: str
    namespace: str
    prefix: str
    description: str
    recipes: list[Recipe]
    published: dict[str, dict[str, Any]]

    def repo_id(self, recipe: Recipe) -> str:
        return f"{self.namespace}/{self.prefix}-{recipe.name}"

    def select(self, tasks: list[str] | None, adapter: str | None = None) -> list[Recipe]:
        """Recipes whose task (or name) is in ``tasks`` (all when None), optionally of one adapter kind."""
        chosen = [r for r in self.recipes if not tasks or r.task in tasks or r.name in tasks]
        if adapter:
            chosen = [r for r in chosen if r.adapter == adapter]
        if tasks:
            known = {r.task for r in self.recipes} | {r.name for r in self.recipes}
            unknown = sorted(set(tasks) - known)
            if unknown:
                raise UsageError(f"the {self.prefix} catalog has no recipe for {', '.join(unknown)}; "
                                 "see `scalearn zoo list`")
        return chosen


def load_catalog(model: str | None = None) -> Catalog:
    """The catalog for ``model`` (a base model id, a catalog slug such as ``minilm-l6``, or a catalog file)."""
    from scalearn_cli.backbone import DEFAULT_MODEL

    model = model or DEFAULT_MODEL
    candidates = [Path(model)] if model.endswith(".json") else []
    for folder in catalog_dirs():
        candidates += sorted(folder.glob("*.json"))
    for path in candidates:
        if not path.is_file():
            continue
        data = read_json(path)
        if model in (data.get("base_model"), data.get("prefix"), path.stem, str(path)):
            return Catalog(
                path=path, base_model=data["base_model"], namespace=data["namespace"], prefix=data["prefix"],
                description=data.get("description", ""), recipes=[Recipe(**r) for r in data["recipes"]],
                published=data.get("published", {}),
            )
    known = sorted({p.stem for d in catalog_dirs() for p in d.glob("*.json")})
    raise UsageError(f"no zoo catalog for model '{model}'; known: {', '.join(known) or 'none'} (or set SCALEARN_ZOO)")


def status(catalog: Catalog, registry) -> list[dict[str, Any]]:
    """One row per recipe: repo id, state (built / stale / missing), revision and test metrics."""
    entries = {e.repo_id: e for e in registry.list(filter=catalog.namespace)} if registry.exists() else {}
    recorded = catalog.published.get(registry.location, {})
    rows = []
    for recipe in catalog.recipes:
        repo_id = catalog.repo_id(recipe)
        entry = entries.get(repo_id)
        want = recipe.hash(catalog.base_model)
        meta = entry.metadata if entry else recorded.get(recipe.name, {})
        have = (meta.get("recipe") or {}).get("hash") or meta.get("recipe_hash")
        state = "missing" if not meta else ("built" if have == want else "stale")
        rows.append({
            "name": recipe.name, "task": recipe.task, "adapter": recipe.adapter, "repo_id": repo_id, "state": state,
            "revision": entry.commit if entry else meta.get("revision"),
            "metrics": (meta.get("metrics") or {}).get("test", {}), "recipe_hash": want,
        })
    return rows


def _data_dir(recipe: Recipe, data_root: Path | None) -> Path | None:
    source = recipe.data.get("source", "hub")
    if source == "hub":
        return None
    if source == "demo":
        from scalearn_cli.demo_data import demo_folder

        return demo_folder(recipe.task, data_root)
    if data_root is None:
        raise UsageError(f"recipe {recipe.name} reads local data: pass --data-root DIR holding {recipe.data['path']}/")
    folder = Path(data_root) / recipe.data["path"]
    if not folder.is_dir():
        raise UsageError(f"recipe {recipe.name} expects its data at {folder}; check --data-root")
    return folder


def build(
    catalog: Catalog,
    registry,
    recipes: list[Recipe],
    data_root: Path | None = None,
    record: bool = False,
    log: Callable[[str], None] = logger.info,
    progress_factory: Callable[[str], Any] | None = None,
) -> list[dict[str, Any]]:
    """Train and push every recipe the registry lacks (same recipe hash = skip); return one row per recipe."""
    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.stages.source import train_source
    from scalearn_cli.train import TrainConfig

    done = {row["name"]: row for row in status(catalog, registry)}
    rows = []
    for recipe in recipes:
        row = done[recipe.name]
        if row["state"] == "built":
            log(f"{row['repo_id']}: already built with this recipe, skipped")
            rows.append({**row, "action": "skipped"})
            continue
        log(f"{row['repo_id']}: training {recipe.adapter} on {recipe.task}")
        data = DataOptions(task=recipe.task, data_dir=_data_dir(recipe, data_root),
                           max_train_samples=recipe.data.get("max_train_samples"))
        extra = {"recipe": {"name": recipe.name, "hash": row["recipe_hash"], "catalog": catalog.prefix}}
        with tempfile.TemporaryDirectory(prefix="scalearn-zoo-") as tmp:
            out = Path(tmp) / recipe.name
            meta = train_source(data, out, recipe.adapter, recipe.settings, TrainConfig(**recipe.train),
                                catalog.base_model, progress=progress_factory(recipe.name) if progress_factory else None,
                                extra_meta=extra, pooling=recipe.pooling)
            message = f"zoo build {recipe.name} ({row['recipe_hash'][:12]})"
            pushed = registry.push(out, row["repo_id"], commit_message=message)
        row = {**row, "state": "built", "revision": pushed.commit, "metrics": meta["metrics"]["test"],
               "action": "built"}
        rows.append(row)
        if record:
            _record(catalog, registry.location, recipe.name, row)
    return rows


def _record(catalog: Catalog, location: str, name: str, row: dict[str, Any]) -> None:
    """Write a published entry back into the catalog file (atomic)."""
    data = read_json(catalog.path)
    data.setdefault("published", {}).setdefault(location, {})[name] = {
        "repo_id": row["repo_id"], "revision": row["revision"], "recipe_hash": row["recipe_hash"],
        "metrics": {"test": row["metrics"]},
    }
    write_json(catalog.path, data)
    catalog.published = data["published"]


def load_published(model: str | None = None) -> list[dict[str, Any]]:
    """Sources other people published (``zoo/published/*.json``) for ``model`` (every base model when None).

    Each row: name, task (ours, or None when the task is not in the task table), repo_id, revision (a commit when
    confirmed, else None: resolved when first used), kind, format, confirmed, and the ``--source`` to pass.
    """
    rows: list[dict[str, Any]] = []
    for folder in catalog_dirs():
        for path in sorted((folder / "published").glob("*.json")):
            data = read_json(path)
            if model and model not in (data.get("base_model"), path.stem):
                continue
            for entry in data.get("sources", []):
                pinned = f"@{entry['revision']}" if entry.get("revision") else ""
                rows.append({**entry, "base_model": data["base_model"], "catalog": str(path),
                             "source": f"hf://{entry['repo_id']}{pinned}"})
    return rows
