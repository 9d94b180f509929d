"""One resolver: a source reference -> (verified folder, :class:`SourceRef`), for every command that loads sources.

A reference is one of

* a folder: a scalearn folder; a snapshot pulled from a registry (``…/models--org--name/snapshots/<commit>``,
  printed by ``scalearn pull``), which keeps its repo id, commit and registry; or any other folder;
* ``org/name[@revision]``: pulled through the configured registry (``--registry``, ``--endpoint``);
* ``hf://org/name[@revision]``: pulled from the configured Hub endpoint;
* ``zoo:NAME`` (``zoo:SLUG/NAME``): the zoo's built source for a task or recipe name — from the registry shipped
  beside the catalog (recorded as ``zoo:SLUG``, so a composition re-resolves in any clone), else the user's.

Recorded references (``composition.json``) are re-found exactly: same commit, same file hashes. A record never
chooses where credentials go: a Hub endpoint it names must be the one the user configured (``--endpoint``,
``--registry URL`` or ``HF_ENDPOINT``), or listed in ``SCALEARN_TRUSTED_ENDPOINTS``; anything else is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from scalearn_cli.artifacts import (
    METADATA_FILE, Folder, Metadata, SourceRef, content_hash, folder_fingerprint, read_folder,
)
from scalearn_cli.errors import ArtifactError, CompositionError, RegistryError
from scalearn_cli.formats import detect_format, foreign_metadata
from scalearn_cli.registry import get_registry, parse_ref
from scalearn_cli.registry.base import backend_for
from scalearn_cli.registry.hub import HubRegistry, resolve_endpoint
from scalearn_cli.sources import SourceKind, get_kind
from scalearn_cli.zoo.catalog import load_catalog, zoo_source

HF_SCHEME = "hf://"
ZOO_SCHEME = "zoo:"
_SNAPSHOT = re.compile(r"^models--(?P<repo>[^/]+)$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Resolved:
    """A source ready to compose: its verified folder, metadata, kind and how the composition names it."""

    folder: Path
    meta: Metadata
    ref: SourceRef

    @property
    def kind(self) -> SourceKind:
        return get_kind(self.meta.adapter.kind)

    @property
    def name(self) -> str:
        return self.ref.ref


@dataclass(frozen=True)
class Resolver:
    """Resolves references against the registry and Hub endpoint the *user* configured."""

    registry: str | None = None  # 'local' (default), 'local:/dir', 'hub' or a Hub URL
    endpoint: str | None = None

    def source(self, ref: str) -> Resolved:
        """A source adapter from a folder, a registry id or an ``hf://`` repo (see the module docstring)."""
        path = Path(ref).expanduser()
        if path.is_dir():
            return self._from_folder(ref, path.resolve())
        if ref.startswith(HF_SCHEME):
            return self._pull(ref, ref[len(HF_SCHEME):], HubRegistry(endpoint=self.hub_endpoint()))
        if ref.startswith(ZOO_SCHEME):
            return self._zoo(ref)
        if path.exists() or "/" not in ref or ref.startswith((".", "/", "~")):
            raise CompositionError(f"source '{ref}' is neither an adapter folder nor a registry id org/name[@rev]")
        local = (self.registry or "local").startswith("local")
        return self._pull(ref, ref, get_registry(self.registry, endpoint=None if local else self.endpoint))

    def recorded(self, record: SourceRef) -> Resolved:
        """Re-find a recorded source exactly (same commit, same file hashes), through a trusted registry only."""
        if record.registry:
            src = self._pull(record.ref, record.pinned, self._recorded_registry(record))
        else:
            if not Path(record.id).is_dir():
                raise ArtifactError(
                    f"source folder {record.id} is missing; restore it (or push it to a registry) and re-run transfer"
                )
            src = self._from_folder(record.id, Path(record.id))
        if src.ref.files != record.files:
            raise ArtifactError(
                f"source '{record.ref}' changed since this composition was trained (file hashes differ); "
                f"restore the original or re-run transfer"
            )
        src.ref = record
        return src

    # ---- where things live -------------------------------------------------------------------------------
    def hub_endpoint(self) -> str:
        """The Hub endpoint the user configured: --endpoint, --registry URL, else $HF_ENDPOINT / the default."""
        spec = self.registry or ""
        return resolve_endpoint(self.endpoint or (spec if spec.startswith(("http://", "https://")) else None))

    def _recorded_registry(self, record: SourceRef):  # -> Registry
        where = record.registry or ""
        if where.startswith(ZOO_SCHEME):
            shipped = load_catalog(where[len(ZOO_SCHEME):]).registry_for(record.id)
            if shipped is None:
                raise RegistryError(f"source '{record.ref}' is recorded in the registry shipped with the zoo catalog "
                                    f"{where[len(ZOO_SCHEME):]}, which this installation lacks; use a source checkout")
            return shipped
        if where == "local":  # written before registries were recorded by their root
            return get_registry(self.registry if (self.registry or "local").startswith("local") else None)
        backend = backend_for(where)
        if backend is not None and not backend.sends_token:
            return get_registry(where)  # e.g. a folder on this machine: no credentials involved
        endpoint = self.hub_endpoint() if where == "hub" else where.rstrip("/")
        if endpoint not in self._trusted():
            raise RegistryError(
                f"source '{record.ref}' is recorded on {endpoint}, which is not your configured Hub endpoint "
                f"({self.hub_endpoint()}); a stored record never chooses where your token goes: pass "
                f"--endpoint {endpoint} if you trust it"
            )
        return HubRegistry(endpoint=endpoint)

    def _trusted(self) -> set[str]:
        extra = os.environ.get("SCALEARN_TRUSTED_ENDPOINTS", "")
        return {self.hub_endpoint(), *(e.strip().rstrip("/") for e in extra.split(",") if e.strip())}

    # ---- the two ways in ---------------------------------------------------------------------------------
    def _pull(self, ref: str, spec: str, registry) -> Resolved:
        repo_id, revision = parse_ref(spec)
        commit = registry.resolve(repo_id, revision)
        folder = Path(registry.pull(repo_id, commit))
        return _resolved(ref, read_source(folder), repo_id, registry_location(registry), commit)

    def zoo_registry(self):  # -> Registry | None
        """The user's registry a zoo source may be built into: only a local one (a zoo build never pushes)."""
        return get_registry(self.registry) if (self.registry or "local").startswith("local") else None

    def _zoo(self, ref: str) -> Resolved:
        from dataclasses import replace

        name = ref[len(ZOO_SCHEME):]
        registry, repo_id, commit = zoo_source(name, registry=self.zoo_registry())
        found = self._pull(ref, f"{repo_id}@{commit}", registry)
        catalog = load_catalog(name.split("/", 1)[0] if "/" in name else None)
        shipped = catalog.registry_for(repo_id)
        if shipped is not None and Path(registry.root) == Path(shipped.root):  # portable: any clone re-finds it
            found.ref = replace(found.ref, registry=ZOO_SCHEME + catalog.prefix)
        return found

    def _from_folder(self, ref: str, folder: Path) -> Resolved:
        found = snapshot_origin(folder, self)
        if found is not None:  # a path printed by `scalearn pull`: keep repo id, commit and registry
            registry, repo_id, commit = found
            if registry.repull_snapshots:
                folder = Path(registry.pull(repo_id, commit))  # verified against the registry's manifest
            return _resolved(ref, read_source(folder), repo_id, registry_location(registry), commit)
        return _resolved(ref, read_source(folder), str(folder), None, None)


def read_source(folder: Path) -> Folder:
    """A verified source folder: scalearn's own (hashes checked), or a PEFT / AdapterHub folder read as is."""
    folder = Path(folder)
    if folder.is_dir() and not (folder / METADATA_FILE).is_file():
        fmt = detect_format(folder)
        if fmt is None:
            raise ArtifactError(
                f"{folder} matches no adapter format: a scalearn folder has scalearn.json, a PEFT LoRA "
                f"adapter_config.json + adapter_model.safetensors (or .bin), an AdapterHub adapter adapter_config.json "
                f"+ pytorch_adapter.bin (or adapter.safetensors)"
            )
        return Folder(folder, foreign_metadata(folder, fmt), folder_fingerprint(folder))
    return read_folder(folder, kind="source")


def _resolved(ref: str, found: Folder, id_: str, registry: str | None, revision: str | None) -> Resolved:
    meta = found.meta
    get_kind(meta.adapter.kind)  # an unknown kind fails here, clearly
    record = SourceRef(ref=ref, id=id_, registry=registry, revision=revision,
                       content_hash=meta.content_hash or content_hash(found.files), files=found.files,
                       task=meta.task_name, adapter_kind=meta.adapter.kind,
                       format=str(meta.extra.get("format", "scalearn")))
    return Resolved(found.path, meta, record)


def registry_location(registry) -> str:
    """How a composition records a registry: ``local:<root>`` or the Hub endpoint URL."""
    return registry.reference


def snapshot_origin(folder: Path, resolver: Resolver):  # -> (Registry, repo_id, commit) | None
    """(registry, repo id, commit) when ``folder`` is a registry or Hub-cache snapshot, else None."""
    commit, snapshots, repo_dir = folder.name, folder.parent, folder.parent.parent
    match = _SNAPSHOT.match(repo_dir.name)
    if not (_COMMIT.match(commit) and snapshots.name == "snapshots" and match):
        return None
    repo_id = match.group("repo").replace("--", "/")
    if (repo_dir / "commits" / f"{commit}.json").is_file():  # scalearn's local registry layout
        return get_registry(f"local:{repo_dir.parent}"), repo_id, commit
    return get_registry("hub", resolver.hub_endpoint()), repo_id, commit
