"""Typed, versioned metadata: what ``scalearn.json`` and ``composition.json`` hold, as frozen dataclasses.

Every class has ``to_dict`` (the exact JSON written) and ``from_dict`` (reads that JSON, and the older forms
scalearn wrote before a field existed). Unknown extra fields of ``scalearn.json`` (a zoo recipe, an export's
provenance, ...) are kept in ``extra`` so nothing a newer writer added is lost on a round trip.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from scalearn_cli.artifacts.io import FORMAT_VERSION
from scalearn_cli.errors import ArtifactError

FolderKind = Literal["source", "composition", "merged"]
POOLINGS: tuple[str, ...] = ("first", "mean", "last")


@dataclass(frozen=True)
class HeadSpec:
    """Enough to rebuild a task head before loading its weights (``head`` in scalearn.json)."""

    hidden_size: int
    num_outputs: int
    pooling: str = "first"  # folders written before the option read the first token
    thresholds: tuple[float, ...] | None = None  # multi-label: each label's probability threshold

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hidden_size": self.hidden_size, "num_outputs": self.num_outputs,
                               "pooling": self.pooling}
        if self.thresholds is not None:  # other heads' entries stay as they were
            out["thresholds"] = list(self.thresholds)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "the folder") -> "HeadSpec":
        pooling = data.get("pooling", "first")
        if pooling not in POOLINGS:
            raise ArtifactError(f"{where} has a head with unknown pooling '{pooling}'; "
                                "upgrade scalearn or re-create it")
        thresholds = data.get("thresholds")
        if thresholds is not None:
            if len(thresholds) != int(data["num_outputs"]) or not all(0.0 < float(t) < 1.0 for t in thresholds):
                raise ArtifactError(f"{where} has head thresholds {thresholds} that are not one probability per "
                                    "output; re-create the folder")
            thresholds = tuple(float(t) for t in thresholds)
        return cls(int(data["hidden_size"]), int(data["num_outputs"]), pooling, thresholds)


@dataclass(frozen=True)
class AdapterSpec:
    """What was trained (``adapter`` in scalearn.json): a source's kind and settings, or a composition's combiner."""

    kind: str  # lora | bottleneck | ... for sources and compositions; "merged" for a merged export
    parameters: int
    settings: dict[str, Any] | None = None  # sources: the kind's settings dataclass as a dict
    method: str | None = None  # compositions: the combiner
    variant: str | None = None  # compositions: the ScaLearn variant

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "parameters": self.parameters}
        if self.settings is not None:
            out["settings"] = self.settings
        if self.method is not None:
            out["method"] = self.method
            out["variant"] = self.variant
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AdapterSpec":
        return cls(str(data["kind"]), int(data.get("parameters", 0)), data.get("settings"), data.get("method"),
                   data.get("variant"))


@dataclass(frozen=True)
class SourceRef:
    """How a composition names one of its sources (``composition.json``): never a copy of its weights.

    ``registry`` is where it was resolved: ``local:<root>`` for a local registry, the endpoint URL for a Hub, or
    None for a plain folder (then ``id`` is its absolute path). ``revision`` is a commit hash (or None for a
    folder). ``files`` are the sha256 of the files that define it, re-checked whenever it is loaded again.
    """

    ref: str
    id: str
    registry: str | None
    revision: str | None
    content_hash: str
    files: dict[str, str]
    task: str
    adapter_kind: str
    format: str = "scalearn"  # the folder format it was read from (scalearn, peft, adapterhub)

    def to_dict(self) -> dict[str, Any]:
        out = {"ref": self.ref, "id": self.id, "registry": self.registry, "revision": self.revision,
               "content_hash": self.content_hash, "files": dict(self.files), "task": self.task,
               "adapter_kind": self.adapter_kind}
        if self.format != "scalearn":  # records of scalearn folders stay as they were
            out["format"] = self.format
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SourceRef":
        try:
            return cls(str(data["ref"]), str(data["id"]), data.get("registry"), data.get("revision"),
                       str(data["content_hash"]), dict(data["files"]), str(data.get("task")),
                       str(data["adapter_kind"]), str(data.get("format", "scalearn")))
        except KeyError as exc:
            raise ArtifactError(f"a source record in composition.json lacks {exc}; re-run transfer") from exc

    @property
    def pinned(self) -> str:
        """The reference that finds exactly this source again: ``id@commit`` or the folder path."""
        return f"{self.id}@{self.revision}" if self.registry else self.id


@dataclass(frozen=True)
class CompositionRecord:
    """``composition.json``: the combiner, the sources in order (by reference) and the sites they meet at."""

    method: str
    variant: str | None
    adapter_kind: str
    sites: tuple[str, ...]
    sources: tuple[SourceRef, ...]
    transfer_parameters: int
    dropout: float | None = None
    sparsity: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)  # combiner options (e.g. AdapterSoup's selection)
    format_version: int = FORMAT_VERSION
    shelf: dict[str, Any] | None = None  # `transfer --shelf`: the shelves, filters and what was skipped
    selection: dict[str, Any] | None = None  # `transfer --select K`: the criterion, each source's score, the cost

    @property
    def n_sources(self) -> int:
        return len(self.sources)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "format_version": self.format_version, "method": self.method, "variant": self.variant,
            "adapter_kind": self.adapter_kind, "n_sources": self.n_sources, "sites": list(self.sites),
            "dropout": self.dropout, "transfer_parameters": self.transfer_parameters, "sparsity": self.sparsity,
            "sources": [s.to_dict() for s in self.sources],
        }
        if self.options:
            out["options"] = self.options
        for name in ("shelf", "selection"):  # written only when set: other records stay as they were
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompositionRecord":
        check_format_version(data, "composition.json")
        try:
            sources = tuple(SourceRef.from_dict(s) for s in data["sources"])
            record = cls(str(data["method"]), data.get("variant"), str(data["adapter_kind"]), tuple(data["sites"]),
                         sources, int(data.get("transfer_parameters", 0)), data.get("dropout"),
                         float(data.get("sparsity") or 0.0), dict(data.get("options") or {}),
                         int(data.get("format_version", FORMAT_VERSION)), data.get("shelf"), data.get("selection"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"composition.json is incomplete ({exc}); re-run transfer") from exc
        if "n_sources" in data and int(data["n_sources"]) != len(sources):
            raise ArtifactError("composition.json lists a different number of sources than n_sources; re-run transfer")
        return record


_CORE = ("format_version", "scalearn_version", "kind", "task", "base_model", "adapter", "head", "metrics", "seed",
         "data", "training", "files", "content_hash", "metadata_sha256")


@dataclass(frozen=True)
class Metadata:
    """``scalearn.json`` of a source, composition or merged-export folder."""

    kind: FolderKind
    task: dict[str, Any]  # tasks.task_to_dict form
    base_model: dict[str, Any]  # backbone.BaseModelRef.to_dict form
    adapter: AdapterSpec
    head: HeadSpec | None  # None: a source another library wrote (no head of ours)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seed: int | None = None
    data: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    content_hash: str | None = None
    scalearn_version: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # recipe, sources, export, ...

    @property
    def task_name(self) -> str:
        return str(self.task["name"])

    @property
    def problem_type(self) -> str:
        return str(self.task["problem_type"])

    def to_dict(self) -> dict[str, Any]:
        """The JSON of scalearn.json, ``metadata_sha256`` included (over everything else in it)."""
        out: dict[str, Any] = {
            "format_version": self.format_version, "scalearn_version": self.scalearn_version, "kind": self.kind,
            "task": self.task, "base_model": self.base_model, "adapter": self.adapter.to_dict(),
            "head": self.head.to_dict() if self.head else None, "metrics": self.metrics, **self.extra,
        }
        for name in ("seed", "data", "training"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.files:
            out["files"] = dict(self.files)
            out["content_hash"] = self.content_hash
        out["metadata_sha256"] = metadata_digest(out)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "the folder") -> "Metadata":
        check_format_version(data, where)
        try:
            return cls(
                kind=data["kind"], task=data["task"], base_model=data["base_model"],
                adapter=AdapterSpec.from_dict(data["adapter"]),
                head=HeadSpec.from_dict(data["head"], where) if data.get("head") else None,
                metrics=data.get("metrics") or {}, seed=data.get("seed"), data=data.get("data"),
                training=data.get("training"), files=dict(data.get("files") or {}),
                content_hash=data.get("content_hash"), scalearn_version=str(data.get("scalearn_version", "")),
                format_version=int(data.get("format_version", 0)),
                extra={k: v for k, v in data.items() if k not in _CORE},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}/scalearn.json lacks or mangles {exc}; "
                                "re-create or re-pull the folder") from exc

    def with_files(self, files: dict[str, str], content_hash: str) -> "Metadata":
        return replace(self, files=dict(files), content_hash=content_hash)

    def with_card(self, card_sha256: str) -> "Metadata":
        """The same metadata recording the sha256 of its model card (README.md), covered by ``metadata_sha256``."""
        return replace(self, extra={**self.extra, "card_sha256": card_sha256})


def metadata_digest(data: dict[str, Any]) -> str:
    """sha256 of scalearn.json's canonical JSON without the digest itself: editing any field is detected."""
    body = {k: v for k, v in data.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_format_version(data: dict[str, Any], where: str) -> None:
    version = data.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(f"{where} was written by a newer scalearn (format {version}); upgrade scalearn")


def field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}
