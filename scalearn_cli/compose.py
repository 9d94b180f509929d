"""Put N frozen source adapters and a combiner (ScaLearn ω, fixed average, or AdapterFusion) into an encoder.

A composition folder stores only what the target learned (ω or fusion weights, and the head) plus
``composition.json``, which names the sources in order by id and revision (registry) or path, with the sha256 of
their files; loading it rebuilds the exact model or fails clearly when a source is missing or changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalearn_cli import artifacts
from scalearn_cli.artifacts import COMPOSITION_FILE, FUSION_FILE, OMEGA_FILE
from scalearn_cli.errors import ArtifactError, CompositionError, UsageError
from scalearn_cli.scaling import VARIANTS, FixedWeights, FusionAttention, LowRankMix, Omega, stack_sources
from scalearn_cli.sources import bottleneck, lora

logger = logging.getLogger(__name__)

METHODS = ("scalearn", "average", "adapterfusion")


@dataclass
class Source:
    """A source adapter ready to compose: where it came from, its folder and its metadata."""

    record: dict[str, Any]  # what composition.json stores: ref, id, registry, revision, content_hash, files, task
    folder: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.record["ref"])


def resolve_source(ref: str, registry: str | None = None) -> Source:
    """A local adapter folder, or a registry reference ``org/name[@revision]`` pulled through ``registry``."""
    from scalearn_cli.sources.pipeline import read_metadata, verify_files

    path = Path(ref).expanduser()
    if path.is_dir():
        meta = read_metadata(path)
        record = {"ref": ref, "id": str(path.resolve()), "registry": None, "revision": None}
        folder = path.resolve()
    else:
        from scalearn_cli.registry import get_registry, parse_ref

        if path.exists() or "/" not in ref or ref.startswith((".", "/", "~")):
            raise CompositionError(f"source '{ref}' is neither an adapter folder nor a registry id org/name[@rev]")
        repo_id, revision = parse_ref(ref)
        reg = get_registry(registry)
        commit = reg.resolve(repo_id, revision)
        folder = Path(reg.pull(repo_id, commit))
        meta = read_metadata(folder)
        record = {"ref": ref, "id": repo_id, "registry": registry or "local", "revision": commit}
    if meta.get("kind") != "source":
        raise CompositionError(f"'{ref}' is a {meta.get('kind')}, not a source adapter; pass source adapters only")
    verify_files(folder, meta)
    record.update(
        content_hash=meta.get("content_hash") or artifacts.content_hash(artifacts.folder_fingerprint(folder)),
        files=artifacts.folder_fingerprint(folder),
        task=meta["task"]["name"],
        adapter_kind=meta["adapter"]["kind"],
    )
    return Source(record, folder, meta)


def check_sources(sources: list[Source]) -> None:
    """At least one source, no duplicates, one base model and one adapter kind."""
    if not sources:
        raise CompositionError("no sources given; pass at least one --source (an adapter folder or org/name@rev)")
    seen: dict[str, str] = {}
    for src in sources:
        digest = src.record["content_hash"]
        if digest in seen:
            raise CompositionError(f"source '{src.name}' duplicates '{seen[digest]}' (same weights); list it once")
        seen[digest] = src.name
    first = sources[0]
    for src in sources[1:]:
        for key in ("id", "revision", "hidden_size", "num_layers"):
            if src.meta["base_model"].get(key) != first.meta["base_model"].get(key):
                raise CompositionError(
                    f"sources '{first.name}' and '{src.name}' were trained on different base models "
                    f"({key}: {first.meta['base_model'].get(key)} vs {src.meta['base_model'].get(key)}); "
                    f"compose sources of one base model"
                )
        if src.meta["adapter"]["kind"] != first.meta["adapter"]["kind"]:
            raise CompositionError(
                f"sources '{first.name}' ({first.meta['adapter']['kind']}) and '{src.name}' "
                f"({src.meta['adapter']['kind']}) are different adapter kinds; compose one kind at a time"
            )


class Composition(nn.Module):
    """Holds the combiner (ω / fixed weights / fusion modules) and the mixes it feeds, after injection."""

    def __init__(self, mixes: dict[str, LowRankMix], method: str, variant: str | None) -> None:
        super().__init__()
        self.method, self.variant = method, variant
        self.sites = sorted(mixes)
        n = next(iter(mixes.values())).n_sources
        if method == "scalearn":
            dims = {site: mixes[site].up.shape[0] for site in self.sites}
            self.combiner: nn.Module = Omega(dims, n, VARIANTS[variant])
        elif method == "average":
            self.combiner = FixedWeights(n)
        else:
            self.combiner = nn.ModuleDict(
                {site.replace(".", "_"): FusionAttention(mixes[site].down.shape[1], mixes[site].up.shape[0]) for site in self.sites}
            )
        for site, mix in mixes.items():
            if method == "adapterfusion":
                mix.fusion = self.combiner[site.replace(".", "_")]
            else:
                object.__setattr__(mix, "weights", self.combiner)  # shared, owned here (not a child of each mix)

    def trainable(self) -> list[nn.Parameter]:
        return list(self.combiner.parameters())

    def state(self) -> dict[str, torch.Tensor]:
        if isinstance(self.combiner, Omega):
            return self.combiner.state()
        return {k: v for k, v in self.combiner.state_dict().items()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if isinstance(self.combiner, Omega):
            self.combiner.load_state(tensors)
        elif isinstance(self.combiner, nn.ModuleDict):
            self.combiner.load_state_dict(tensors)


def inject(encoder: nn.Module, sources: list[Source], method: str, variant: str | None) -> Composition:
    """Replace the encoder's adapter sites with frozen mixes of all sources; return the combiner holder."""
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    if method == "scalearn" and variant not in VARIANTS:
        raise UsageError(f"--variant must be one of {', '.join(VARIANTS)}, got '{variant}'")
    kind = sources[0].meta["adapter"]["kind"]
    mixes = _inject_bottleneck(encoder, sources) if kind == "bottleneck" else _inject_lora(encoder, sources)
    return Composition(mixes, method, variant if method == "scalearn" else None)


def _inject_bottleneck(encoder: nn.Module, sources: list[Source]) -> dict[str, LowRankMix]:
    loaded = [bottleneck.load_weights(src.folder)[1] for src in sources]
    mixes = {}
    for layer in range(len(encoder.encoder.layer)):
        per_src = [layers[layer] for layers in loaded]
        down, up, src = stack_sources([s["down.weight"] for s in per_src], [s["up.weight"] for s in per_src])
        site = bottleneck.site_name(layer)
        mixes[site] = LowRankMix(
            site, down, up, src, len(sources), "relu",
            down_bias=torch.cat([s["down.bias"] for s in per_src]),
            up_bias=torch.stack([s["up.bias"] for s in per_src]),
        )
    bottleneck.wrap_outputs(encoder, [mixes[bottleneck.site_name(i)] for i in range(len(mixes))])
    return mixes


def _inject_lora(encoder: nn.Module, sources: list[Source]) -> dict[str, LowRankMix]:
    loaded = [lora.load_sites(src.folder) for src in sources]
    paths = sorted({p for sites in loaded for p in sites})
    modules = dict(encoder.named_modules())
    mixes = {}
    for path in paths:
        base = modules.get(path)
        if not isinstance(base, nn.Linear):
            raise CompositionError(f"LoRA site '{path}' is not a Linear layer of this base model; check the sources")
        downs, ups = [], []
        for sites in loaded:  # a source without this site contributes rank 0
            site = sites.get(path)
            downs.append(site.a if site else base.weight.new_zeros((0, base.in_features)))
            ups.append(site.b * site.scaling if site else base.weight.new_zeros((base.out_features, 0)))
        down, up, src = stack_sources(downs, ups)
        mixes[path] = LowRankMix(path, down, up, src, len(sources), "identity")
        parent_path, _, child = path.rpartition(".")
        setattr(modules[parent_path], child, lora.ComposedLinear(base, mixes[path]))
    return mixes


def combiner_file(method: str) -> str | None:
    """The file that holds what a method learned between the sources (None: nothing learned)."""
    return {"scalearn": OMEGA_FILE, "adapterfusion": FUSION_FILE}.get(method)


def composition_record(sources: list[Source], comp: Composition) -> dict[str, Any]:
    """The composition.json content (no source weights, only references)."""
    return {
        "format_version": artifacts.FORMAT_VERSION,
        "method": comp.method,
        "variant": comp.variant,
        "adapter_kind": sources[0].meta["adapter"]["kind"],
        "n_sources": len(sources),
        "sites": comp.sites,
        "dropout": getattr(comp.combiner, "p_drop", None),
        "transfer_parameters": sum(p.numel() for p in comp.trainable()),
        "sources": [src.record for src in sources],
    }


def resolve_recorded(record: dict[str, Any]) -> Source:
    """Re-find a source exactly as composition.json recorded it (same commit / same file hashes)."""
    if record.get("registry"):
        ref = f"{record['id']}@{record['revision']}"
        src = resolve_source(ref, record["registry"])
    else:
        if not Path(record["id"]).is_dir():
            raise ArtifactError(
                f"source folder {record['id']} is missing; restore it (or push it to a registry) and re-run transfer"
            )
        src = resolve_source(record["id"])
    if src.record["files"] != record["files"]:
        raise ArtifactError(
            f"source '{record['ref']}' changed since this composition was trained (file hashes differ); "
            f"restore the original or re-run transfer"
        )
    src.record = dict(record)
    return src


def load_composition(folder: Path, encoder: nn.Module | None = None):  # -> (TaskModel, tokenizer, meta)
    """Rebuild a trained composition (sources re-resolved and verified) as a task model in eval mode."""
    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.model import TaskModel
    from scalearn_cli.sources.pipeline import build_head, read_metadata

    folder = Path(folder)
    meta = read_metadata(folder)
    if meta.get("kind") != "composition":
        raise ArtifactError(f"{folder} is a {meta.get('kind')}, not a composition")
    record = artifacts.read_json(folder / COMPOSITION_FILE)
    sources = [resolve_recorded(r) for r in record["sources"]]
    tokenizer = None
    if encoder is None:
        encoder, tokenizer, _ = load_backbone(meta["base_model"]["id"])
    comp = inject(encoder, sources, record["method"], record["variant"])
    name = combiner_file(record["method"])
    if name:
        try:
            comp.load_state(artifacts.load_tensors(folder / name))
        except (KeyError, RuntimeError) as exc:
            raise ArtifactError(f"{folder}/{name} does not fit composition.json ({exc}); re-run transfer") from exc
    model = TaskModel(encoder, build_head(meta, folder), meta["task"]["problem_type"])
    model.composition = comp
    model.eval()
    return model, tokenizer, meta
