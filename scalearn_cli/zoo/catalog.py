"""The adapter zoo: catalogs of source-adapter recipes per base model, built into a registry on demand.

A catalog (``zoo/<slug>.json``) is data: base model, repo namespace, recipes, published entries by registry, each
recipe's majority baseline, and optionally a *shipped registry* (a local registry committed beside the catalog, e.g.
``zoo/registry``) that holds built sources, so a fresh clone composes them without training. ``build`` trains what
the registry does not hold yet *with the same recipe hash* and pushes it, so an interrupted build resumes where it
stopped. ``zoo:NAME`` references (:func:`zoo_source`) name a built source by its task or recipe name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalearn_cli.artifacts import read_json, write_json
from scalearn_cli.backbone import DEFAULT_MODEL
from scalearn_cli.errors import UsageError
from scalearn_cli.registry.local import LocalRegistry
from scalearn_cli.shelf_tasks import family
from scalearn_cli.tasks import TASKS

logger = logging.getLogger(__name__)


def catalog_dirs() -> list[Path]:
    """Where catalogs are looked up: $SCALEARN_ZOO, the source checkout's zoo/, the installed share/scalearn/zoo."""
    dirs = [Path(os.environ["SCALEARN_ZOO"])] if os.environ.get("SCALEARN_ZOO") else []
    dirs.append(Path(__file__).resolve().parents[2] / "zoo")
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
    # a source built elsewhere with these settings (e.g. by the benchmark): {"registry": folder relative to the
    # catalog's, "repo_id": ...}; it is the recipe's built source, kept once, and not part of the recipe hash
    prebuilt: dict[str, str] | None = None

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
    registry: str | None = None  # the shipped registry, relative to the catalog file's folder
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> majority test metrics

    @property
    def shipped(self):  # -> LocalRegistry | None
        """The registry committed beside the catalog (None when the catalog ships none or it is absent)."""
        if not self.registry or not (self.path.parent / self.registry).is_dir():
            return None
        return LocalRegistry(self.path.parent / self.registry)

    def prebuilt(self, recipe: Recipe):  # -> (LocalRegistry, RepoEntry) | None
        """Where a recipe's prebuilt source lives, when the catalog names one and its registry holds it."""
        if not recipe.prebuilt or not (self.path.parent / recipe.prebuilt["registry"]).is_dir():
            return None
        registry = LocalRegistry(self.path.parent / recipe.prebuilt["registry"])
        entry = _entries(registry).get(recipe.prebuilt["repo_id"])
        return (registry, entry) if entry is not None else None

    def registry_for(self, repo_id: str):  # -> LocalRegistry | None
        """The registry shipped with the catalog (its own or a prebuilt one) that holds ``repo_id``."""
        for recipe in self.recipes:
            found = self.prebuilt(recipe) if recipe.prebuilt and recipe.prebuilt["repo_id"] == repo_id else None
            if found is not None:
                return found[0]
        return self.shipped

    def recipe(self, name: str) -> Recipe:
        """The recipe called ``name``, or the one LoRA (else only) recipe of task ``name``."""
        named = [r for r in self.recipes if r.name == name]
        by_task = sorted((r for r in self.recipes if r.task == name), key=lambda r: r.adapter != "lora")
        found = named or by_task
        if not found:
            raise UsageError(f"the {self.prefix} catalog has no recipe or task '{name}'; see `scalearn zoo list`")
        return found[0]

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
                published=data.get("published", {}), registry=data.get("registry"),
                baselines=data.get("baselines", {}),
            )
    known = sorted({p.stem for d in catalog_dirs() for p in d.glob("*.json")})
    raise UsageError(f"no zoo catalog for model '{model}'; known: {', '.join(known) or 'none'} (or set SCALEARN_ZOO)")


def status(catalog: Catalog, registry) -> list[dict[str, Any]]:
    """One row per recipe: repo id, family, state, where it is, revision, test metrics, majority baseline, size.

    State: ``built`` (the registry holds it with this recipe's hash), ``shipped`` (the catalog's shipped registry
    does), ``stale`` (built with another recipe hash) or ``missing``.
    """
    entries = _entries(registry)
    shipped = catalog.shipped
    shipped_entries = _entries(shipped) if shipped is not None else {}
    recorded = catalog.published.get(registry.location, {})
    rows = []
    for recipe in catalog.recipes:
        repo_id = catalog.repo_id(recipe)
        want = recipe.hash(catalog.base_model)
        entry, where = entries.get(repo_id), registry.location
        prebuilt = catalog.prebuilt(recipe)
        if not _matches(entry, want) and _matches(shipped_entries.get(repo_id), want):
            entry, where = shipped_entries[repo_id], shipped.location
        elif not _matches(entry, want) and prebuilt is not None:
            (reg, entry), where, repo_id = prebuilt, prebuilt[0].location, prebuilt[1].repo_id
        meta = entry.metadata if entry else recorded.get(recipe.name, {})
        state = ("missing" if not meta else "shipped" if prebuilt is not None and where == prebuilt[0].location
                 else "stale" if not _matches_meta(meta, want)
                 else "shipped" if shipped is not None and where == shipped.location else "built")
        metrics = (meta.get("metrics") or {}).get("test", {})
        rows.append({
            "name": recipe.name, "task": recipe.task, "family": family(recipe.task), "adapter": recipe.adapter,
            "repo_id": repo_id, "state": state, "registry": where if entry else None,
            "revision": entry.commit if entry else meta.get("revision"),
            "metrics": metrics, "main_metric": _main_metric(recipe.task), "recipe_hash": want,
            "baseline": catalog.baselines.get(recipe.task), "bytes": _size(entry),
        })
    return rows


def built(catalog: Catalog, registry=None) -> list[dict[str, Any]]:
    """:func:`status` rows of the catalog's built sources, in catalog order: shipped (its own registry or a
    prebuilt one) or built into ``registry`` (the user's; None: the shipped ones only)."""
    if registry is None:
        registry = catalog.shipped or LocalRegistry(catalog.path.parent / "registry")  # absent: prebuilt ones only
    return [row for row in status(catalog, registry) if row["state"] in ("built", "shipped")]


def _entries(registry) -> dict[str, Any]:
    return {e.repo_id: e for e in registry.list()} if registry.exists() else {}


def _matches_meta(meta: dict[str, Any], want: str) -> bool:
    return ((meta.get("recipe") or {}).get("hash") or meta.get("recipe_hash")) == want


def _matches(entry: Any, want: str) -> bool:
    return entry is not None and _matches_meta(entry.metadata, want)


def _main_metric(task: str) -> str | None:
    return TASKS[task].main_metric if task in TASKS else None


def _size(entry: Any) -> int | None:
    """Bytes of the source's files (from its registry manifest), None when unknown."""
    sizes = getattr(entry, "sizes", None)
    return sum(sizes.values()) if sizes else None


def zoo_source(name: str, model: str | None = None, registry=None) -> tuple[Any, str, str]:
    """(registry, repo id, revision) of the built source ``zoo:NAME`` (``NAME`` a task or recipe name, optionally
    ``slug/NAME`` for another catalog than the default model's): the shipped registry's copy when it holds this
    recipe, else ``registry``'s (the user's)."""
    if "/" in name:
        model, name = name.split("/", 1)
    catalog = load_catalog(model)
    recipe = catalog.recipe(name)
    repo_id, want = catalog.repo_id(recipe), recipe.hash(catalog.base_model)
    prebuilt = catalog.prebuilt(recipe)
    if prebuilt is not None:
        return prebuilt[0], prebuilt[1].repo_id, prebuilt[1].commit
    for reg in (catalog.shipped, registry):
        if reg is None:
            continue
        entry = _entries(reg).get(repo_id)
        if _matches(entry, want):
            return reg, repo_id, entry.commit
    raise UsageError(f"zoo source '{name}' ({repo_id}) is not built yet: run `scalearn zoo build --tasks "
                     f"{recipe.name}` (see `scalearn zoo list`)")


def record_baseline(catalog: Catalog, task: str, baseline: dict[str, float]) -> None:
    """Write a task's majority-baseline test metrics into the catalog file."""
    data = read_json(catalog.path)
    data.setdefault("baselines", {})[task] = {k: round(float(v), 4) for k, v in baseline.items()}
    write_json(catalog.path, data)
    catalog.baselines = data["baselines"]


def record_published(catalog: Catalog, location: str, name: str, row: dict[str, Any]) -> None:
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
