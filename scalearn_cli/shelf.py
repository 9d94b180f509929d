"""A shelf as one argument: every source of a registry or a folder that fits the target, through filters.

A shelf is one of

* a registry, as ``scalearn list --registry`` takes it: ``local``, ``local:/dir`` or a registry folder (it holds
  ``models--org--name/commits``), ``hub`` or a Hub URL: every repo ``list`` shows, at the commit ``main`` points at;
* a plain folder of adapter folders (scalearn's, plain PEFT LoRA, AdapterHub), one level deep;
* ``zoo`` (``zoo:SLUG``): every built source of the zoo catalog for the target's base model (or catalog SLUG) —
  the ones shipped with it and the ones built into the user's registry — each as ``zoo:SLUG/NAME``, so a
  composition re-resolves in any clone; ids are recipe names (``cr-lora``).

Filters narrow it: task family (:func:`scalearn_cli.shelf_tasks.family` of the task a source was trained on),
adapter kind, and include/exclude globs on ids (a registry's repo id, a folder's name). A registry is filtered on
its listing before anything is pulled. What survives is resolved like ``-s`` sources, so ``composition.json``
records each with its commit (registry) or path and file hashes, and eval/export re-resolve exactly that set.
Sources trained on another base model than the target's are skipped, each named in a log line.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalearn_cli.artifacts import METADATA_FILE
from scalearn_cli.errors import CompositionError, ScaLearnError, UsageError
from scalearn_cli.registry import get_registry
from scalearn_cli.resolve import ZOO_SCHEME, Resolved, Resolver
from scalearn_cli.shelf_tasks import FAMILIES, family
from scalearn_cli.sources import kind_names
from scalearn_cli.zoo.catalog import built, load_catalog

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShelfFilter:
    """Which sources of the shelves to keep (empty: no filter of that kind)."""

    families: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    include: tuple[str, ...] = ()  # globs on ids: keep a source that matches any
    exclude: tuple[str, ...] = ()  # globs on ids: drop a source that matches any

    def __post_init__(self) -> None:
        known = sorted({*FAMILIES.values(), "other"})
        for name in self.families:
            if name not in known:
                raise UsageError(f"unknown task family '{name}' in --shelf-family; known: {', '.join(known)}")
        for kind in self.kinds:
            if kind not in kind_names():
                raise UsageError(f"unknown adapter kind '{kind}' in --shelf-kind; known: {', '.join(kind_names())}")

    def to_dict(self) -> dict[str, list[str]]:
        return {"families": list(self.families), "kinds": list(self.kinds), "include": list(self.include),
                "exclude": list(self.exclude)}


@dataclass(frozen=True)
class Candidate:
    """One source a shelf offers, before it is pulled: enough to filter it, and the reference that resolves it."""

    id: str  # what the globs see: a repo id, or the folder's name
    ref: str  # what ``resolver`` resolves: ``org/name@commit`` or the folder's path
    resolver: Resolver
    task: str | None = None
    kind: str | None = None
    base: str | None = None
    resolved: Resolved | None = None  # a folder is read (and verified) to learn its task, kind and base


@dataclass
class ShelfSources:
    """What the shelves gave: the sources to compose, what was skipped (and why), and the record of both."""

    sources: list[Resolved]
    skipped: list[dict[str, str]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def shelf_candidates(spec: str, resolver: Resolver, unreadable: list[dict[str, str]] | None = None,
                     model: str | None = None) -> list[Candidate]:
    """Every source ``spec`` (a registry, the zoo, or a folder of adapter folders, see the module docstring)
    offers, by id; a folder's sub-folders that are no adapter are appended to ``unreadable`` (id and why), when
    given. ``model`` (the target's base model) chooses the zoo's catalog for ``zoo``."""
    if _is_zoo(spec):
        return _zoo_candidates(spec[len(ZOO_SCHEME):] or model, resolver)
    path = Path(spec).expanduser()
    if spec in ("local", "hub") or spec.startswith(("local:", "http://", "https://")) or _is_registry(path):
        return _registry_candidates(f"local:{path.resolve()}" if _is_registry(path) else spec, resolver)
    if not path.is_dir():
        raise UsageError(f"--shelf {spec} is neither a folder nor a registry ('local', 'local:/dir', 'hub' or a "
                         f"Hub URL); pass one of those")
    found = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            src = resolver.source(str(folder))
        except ScaLearnError as exc:  # a broken or unknown adapter: name it, keep going
            log = logger.warning if _looks_like_adapter(folder) else logger.info  # data, notes...: said with -v
            log("shelf %s: skipping %s: %s", spec, folder.name, exc)
            if unreadable is not None:
                unreadable.append({"id": folder.name, "reason": f"not an adapter folder ({exc})"})
            continue
        found.append(Candidate(folder.name, str(folder), resolver, src.meta.task_name, src.meta.adapter.kind,
                               src.meta.base_model.get("id"), src))
    return found


def _looks_like_adapter(folder: Path) -> bool:
    return (folder / METADATA_FILE).is_file() or (folder / "adapter_config.json").is_file()


def _is_registry(path: Path) -> bool:
    """A scalearn local registry root: it holds ``models--org--name`` folders with commit manifests."""
    return path.is_dir() and any((repo / "commits").is_dir() for repo in path.glob("models--*"))


def _registry_candidates(spec: str, resolver: Resolver) -> list[Candidate]:
    local = spec == "local" or spec.startswith("local:")
    endpoint = None if local else resolver.endpoint
    registry = get_registry(spec, endpoint=endpoint)
    pulls = Resolver(spec, endpoint)  # the shelf's own registry: its sources are recorded there
    found = []
    for entry in registry.list():
        if entry.metadata.get("kind") != "source":  # compositions and merged exports are not sources
            continue
        meta = entry.metadata
        found.append(Candidate(entry.repo_id, f"{entry.repo_id}@{entry.commit}", pulls,
                               str((meta.get("task") or {}).get("name")), str((meta.get("adapter") or {}).get("kind")),
                               (meta.get("base_model") or {}).get("id")))
    return found


def _is_zoo(spec: str) -> bool:
    return spec == "zoo" or spec.startswith(ZOO_SCHEME)


def _zoo_candidates(catalog_name: str | None, resolver: Resolver) -> list[Candidate]:
    catalog = load_catalog(catalog_name)
    rows = built(catalog, resolver.zoo_registry())
    return [Candidate(row["name"], f"{ZOO_SCHEME}{catalog.prefix}/{row['name']}", resolver, row["task"],
                      row["adapter"], catalog.base_model) for row in rows]


def filter_candidates(candidates: list[Candidate], filters: ShelfFilter) -> list[Candidate]:
    """The candidates every filter keeps; a glob that matches no id at all is a typo, refused in one line."""
    ids = [c.id for c in candidates]
    for option, globs in (("--shelf-include", filters.include), ("--shelf-exclude", filters.exclude)):
        for glob in globs:
            if not fnmatch.filter(ids, glob):
                raise UsageError(f"{option} '{glob}' matches none of the shelf's {len(ids)} ids "
                                 f"(e.g. {', '.join(ids[:3]) or 'none'}); fix the pattern")
    kept = [c for c in candidates
            if (not filters.include or any(fnmatch.fnmatchcase(c.id, g) for g in filters.include))
            and not any(fnmatch.fnmatchcase(c.id, g) for g in filters.exclude)
            and (not filters.families or family(c.task or "") in filters.families)
            and (not filters.kinds or c.kind in filters.kinds)]
    if not kept:
        raise UsageError(f"the shelf filters ({_describe(filters)}) keep none of its {len(candidates)} sources; "
                         "loosen them")
    return kept


def _describe(filters: ShelfFilter) -> str:
    parts = [f"{name} {', '.join(values)}" for name, values in filters.to_dict().items() if values]
    return "; ".join(parts) or "none"


def open_shelves(specs: tuple[str, ...], filters: ShelfFilter, resolver: Resolver, given: list[Resolved],
                 base_model: str | None = None) -> ShelfSources:
    """The shelves' sources that pass ``filters`` and fit the target's base model, resolved and verified.

    The target's base model is ``base_model`` (``--model``), else the one the ``given`` (``-s``) sources name, else
    the one every kept shelf source names (several: a one-line error asks for ``--model``). Sources already given,
    or on two shelves, are composed once.
    """
    candidates: list[Candidate] = []
    unreadable: list[dict[str, str]] = []
    for spec in specs:
        offered = shelf_candidates(spec, resolver, unreadable, base_model)
        if not offered:
            hint = "build some with `scalearn zoo build`" if _is_zoo(spec) else "push some there"
            raise UsageError(f"--shelf {spec} holds no adapter sources; {hint} or pass another shelf")
        candidates += offered
    kept = filter_candidates(candidates, filters)
    base = base_model or next((s.meta.base_model.get("id") for s in given if s.meta.base_model.get("id")), None)
    if base is None:
        bases = sorted({str(c.base) for c in kept if c.base})
        if len(bases) > 1:
            raise UsageError(f"the shelf holds sources of {len(bases)} base models ({', '.join(bases)}); pass "
                             "--model to choose the target's")
        base = bases[0] if bases else None
    fits, skipped = [], list(unreadable)
    for cand in kept:
        if not _same_base(cand.base, base):
            logger.warning("shelf: skipping %s: trained on %s, not the target's base model %s", cand.id, cand.base,
                           base)
            skipped.append({"id": cand.id, "reason": f"base model {cand.base}" if cand.base else "names no base model"})
        else:
            fits.append(cand)
    if not fits:
        named = sorted({str(c.base) for c in kept})
        raise CompositionError(f"no source on the shelf was trained on {base} (they name {', '.join(named)}); "
                               f"pass --model with one of those, or a shelf for {base}")
    fits = _one_kind(fits, given, skipped)
    sources = _dedupe([c.resolved or c.resolver.source(c.ref) for c in fits], given, skipped)
    record = {"shelves": list(specs), "filters": filters.to_dict(), "base_model": base,
              "from_shelf": [s.ref.ref for s in sources], "skipped": skipped}
    return ShelfSources(sources, skipped, record)


def _one_kind(fits: list[Candidate], given: list[Resolved], skipped: list[dict[str, str]]) -> list[Candidate]:
    """One adapter kind per composition: the -s sources' kind, else the shelf's only one (several: an error)."""
    kinds = sorted({str(c.kind) for c in fits})
    if given:
        want = given[0].meta.adapter.kind
        for cand in fits:
            if cand.kind != want:
                logger.warning("shelf: skipping %s: a %s source, the -s sources are %s", cand.id, cand.kind, want)
                skipped.append({"id": cand.id, "reason": f"adapter kind {cand.kind}"})
        fits = [c for c in fits if c.kind == want]
        if not fits:
            raise CompositionError(f"no source on the shelf is a {want} adapter like the -s sources; pass a shelf of "
                                   f"{want} adapters")
    elif len(kinds) > 1:
        counts = ", ".join(f"{k} ({sum(c.kind == k for c in fits)})" for k in kinds)
        raise UsageError(f"the shelf holds several adapter kinds: {counts}; pass --shelf-kind to compose one")
    return fits


def _same_base(named: str | None, base: str | None) -> bool:
    """One base model: the same id, or two paths to the same folder."""
    if named is None or base is None:
        return named == base
    if named == base:
        return True
    return Path(named).expanduser().is_dir() and Path(named).expanduser().resolve() == Path(base).expanduser().resolve()


def _dedupe(sources: list[Resolved], given: list[Resolved], skipped: list[dict[str, str]]) -> list[Resolved]:
    """Drop shelf sources whose weights are already composed (given with -s, or on an earlier shelf)."""
    seen = {s.ref.content_hash: s.name for s in given}
    kept = []
    for src in sources:
        if src.ref.content_hash in seen:
            logger.info("shelf: %s has the same weights as %s; composed once", src.name, seen[src.ref.content_hash])
            skipped.append({"id": src.name, "reason": f"same weights as {seen[src.ref.content_hash]}"})
            continue
        seen[src.ref.content_hash] = src.name
        kept.append(src)
    return kept
