"""Put N frozen source adapters and a combiner into an encoder; rebuild a saved composition.

The kind table (``sources``) reads every source as low-rank tensors per site and installs the mixes; the
combiner table (``combiners``) builds what mixes them (ω, fixed weights, fusion attention). A composition folder
stores only what the target learned plus ``composition.json``, which names the sources by id and revision
(registry) or path with the sha256 of their files; loading it re-resolves and re-verifies every source.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from scalearn_cli.artifacts import COMPOSITION_FILE, CompositionRecord, load_tensors, read_folder, read_json
from scalearn_cli.backbone import check_base_revision, load_backbone
from scalearn_cli.combiners import BuildContext, Combiner, CombinerSpec, get_combiner
from scalearn_cli.errors import ArtifactError, CompositionError, UsageError
from scalearn_cli.formats.checks import check_finite_tensors
from scalearn_cli.model import build_head, task_model_for
from scalearn_cli.resolve import Resolved, Resolver
from scalearn_cli.scaling import LowRankMix, stack_sources
from scalearn_cli.sources import SiteWeights

logger = logging.getLogger(__name__)


class Composition(nn.Module):
    """Owns the combiner's module (ω / fixed weights / fusion) and knows the sites it feeds."""

    def __init__(self, mixes: dict[str, LowRankMix], combiner: Combiner, spec: CombinerSpec,
                 context: BuildContext) -> None:
        super().__init__()
        self.spec, self.impl = spec, combiner
        self.sites = sorted(mixes)
        self.combiner = combiner.build(mixes, spec, context)

    @property
    def method(self) -> str:
        return self.spec.method

    @property
    def variant(self) -> str | None:
        return self.spec.variant

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.combiner.parameters() if p.requires_grad]  # PEFT-built combiners: frozen

    def state(self) -> dict[str, torch.Tensor]:
        return self.impl.state(self.combiner)

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.impl.load_state(self.combiner, tensors)


def check_sources(sources: list[Resolved]) -> None:
    """At least one source, no duplicates, one base model and one adapter kind."""
    if not sources:
        raise UsageError("no sources given; pass at least one --source (an adapter folder or org/name@rev)")
    seen: dict[str, str] = {}
    for src in sources:
        if src.ref.content_hash in seen:
            raise CompositionError(f"source '{src.name}' duplicates '{seen[src.ref.content_hash]}' (same weights); "
                                   "list it once")
        seen[src.ref.content_hash] = src.name
    first = sources[0]
    for src in sources[1:]:
        for key in ("id", "revision", "model_type", "hidden_size", "num_layers"):
            mine, theirs = first.meta.base_model.get(key), src.meta.base_model.get(key)
            if key != "id" and (mine is None or theirs is None):
                continue  # a foreign adapter does not record it: the shapes are checked when it is installed
            if mine != theirs:
                raise CompositionError(
                    f"sources '{first.name}' and '{src.name}' were trained on different base models "
                    f"({key}: {mine} vs {theirs}); compose sources of one base model"
                )
        if src.meta.adapter.kind != first.meta.adapter.kind:
            raise CompositionError(
                f"sources '{first.name}' ({first.meta.adapter.kind}) and '{src.name}' ({src.meta.adapter.kind}) "
                f"are different adapter kinds; compose one kind at a time"
            )


def inject(encoder: nn.Module, sources: list[Resolved], spec: CombinerSpec) -> Composition:
    """Replace the encoder's adapter sites with frozen mixes of all sources; return the combiner holder."""
    combiner = get_combiner(spec.method)
    kind = sources[0].kind
    read = [kind.read_sites(src.folder) for src in sources]
    for src, per_site in zip(sources, read):
        check_finite_sites(src.name, per_site)
    sites = sorted({s for r in read for s in r})
    mixes = {site: _mix(site, [r.get(site) for r in read], kind.activation) for site in sites}
    kind.install(encoder, mixes)
    return Composition(mixes, combiner, spec, BuildContext(list(sources), encoder))


def check_finite_sites(name: str, per_site: dict[str, SiteWeights]) -> None:
    """Refuse a source whose weights hold NaN or infinity (training over it would only report a NaN loss)."""
    for site, w in per_site.items():
        tensors = {"down": w.down, "up": w.up, "down_bias": w.down_bias, "up_bias": w.up_bias}
        check_finite_tensors(f"source '{name}' at {site}", {k: v for k, v in tensors.items() if v is not None})


def _mix(site: str, per_source: list[SiteWeights | None], activation: str) -> LowRankMix:
    """Stack N sources at one site; a source that does not adapt the site contributes rank 0."""
    present = next(w for w in per_source if w is not None)
    d_in, d_out = present.down.shape[1], present.up.shape[0]
    empty = SiteWeights(present.down.new_zeros((0, d_in)), present.up.new_zeros((d_out, 0)))
    weights = [w if w is not None else empty for w in per_source]
    down, up, src = stack_sources([w.down.float() for w in weights], [w.up.float() for w in weights])
    down_bias = up_bias = None
    if any(w.down_bias is not None for w in weights):
        down_bias = torch.cat([w.down_bias if w.down_bias is not None else w.down.new_zeros(w.rank) for w in weights])
        up_bias = torch.stack([w.up_bias if w.up_bias is not None else present.up.new_zeros(d_out) for w in weights])
    return LowRankMix(site, down, up, src, len(weights), activation, down_bias=down_bias, up_bias=up_bias)


def composition_record(sources: list[Resolved], comp: Composition, sparsity: float = 0.0) -> CompositionRecord:
    """What composition.json holds: references to the sources, never their weights."""
    return CompositionRecord(
        method=comp.method, variant=comp.variant, adapter_kind=sources[0].meta.adapter.kind, sites=tuple(comp.sites),
        sources=tuple(s.ref for s in sources), transfer_parameters=sum(p.numel() for p in comp.trainable()),
        dropout=getattr(comp.combiner, "p_drop", None), sparsity=sparsity, options=dict(comp.spec.options),
    )


def read_record(folder: Path) -> CompositionRecord:
    return CompositionRecord.from_dict(read_json(Path(folder) / COMPOSITION_FILE))


def load_composition(folder: Path, encoder: nn.Module | None = None, resolver: Resolver | None = None):
    """Rebuild a trained composition (its files and every source verified) as (TaskModel, tokenizer, meta dict)."""
    found = read_folder(folder, kind="composition")
    record = read_record(found.path)
    resolver = resolver or Resolver()
    sources = [resolver.recorded(ref) for ref in record.sources]
    tokenizer = None
    generative = found.meta.problem_type == "generation"  # ``encoder`` is then the causal LM, LM head included
    if encoder is None:
        encoder, tokenizer, ref = load_backbone(found.meta.base_model["id"], causal_lm=generative)
        check_base_revision(ref, found.meta.base_model, f"the composition {folder}")
    spec = CombinerSpec(record.method, record.variant, record.options)
    comp = inject(encoder.base_model if generative else encoder, sources, spec)
    name = comp.impl.weights_file
    if name:
        try:
            comp.load_state(load_tensors(found.path / name))
        except (KeyError, RuntimeError) as exc:
            raise ArtifactError(f"{folder}/{name} does not fit composition.json ({exc}); re-run transfer") from exc
    model = task_model_for(encoder, None if generative else build_head(found.meta.head, found.path),
                           found.meta.problem_type)
    model.composition = comp
    model.eval()
    return model, tokenizer, found.meta.to_dict()
