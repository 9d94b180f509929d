"""Combiners behind one protocol and one table: what mixes N frozen sources at every site.

As AdapterHub's composition blocks, a combiner is a small value (:class:`CombinerSpec`: method, variant,
options, with ``to_dict/from_dict``) plus the module it builds. Adding one is one module with a class
implementing :class:`Combiner` and one line in :data:`COMBINERS`; the CLI's choices, transfer defaults, export,
inspect and prune ask the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from scalearn_cli.errors import UsageError
from scalearn_cli.plugins import lookup


@dataclass(frozen=True)
class CombinerSpec:
    """Which combiner, which variant of it, and its options (recorded in composition.json)."""

    method: str
    variant: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "variant": self.variant, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CombinerSpec":
        return cls(str(data["method"]), data.get("variant"), dict(data.get("options") or {}))


@dataclass
class TargetContext:
    """What a combiner may look at before it is built: the target's training texts and the sources' metadata."""

    texts: list[str]
    sources: list[Any]  # resolve.Resolved, in composition order
    encoder: nn.Module
    tokenizer: Any
    max_length: int = 128


@runtime_checkable
class Combiner(Protocol):
    name: str
    label: str  # for messages and cards, e.g. "AdapterFusion"
    #: the file that holds what it learned between the sources (None: nothing learned)
    weights_file: str | None
    default_lr: float
    default_patience: int | None
    #: linear in the sources' outputs with input-independent weights: folds into one LoRA over LoRA sources
    foldable: bool
    #: has per-source weights ω that ``inspect`` can show and ``prune`` can rank by
    has_omega: bool
    variants: tuple[str, ...]

    def spec(self, variant: str | None = None, options: dict[str, Any] | None = None) -> CombinerSpec:
        """A validated spec (unknown variants or options: a UsageError)."""

    def prepare(self, spec: CombinerSpec, target: TargetContext) -> CombinerSpec:
        """Choices made from the target data before building (AdapterSoup picks its sources); else ``spec``."""

    def build(self, mixes: dict[str, nn.Module], spec: CombinerSpec) -> nn.Module:
        """The combiner's module, installed into every site's mix (owned by the Composition, not the mixes)."""

    def state(self, module: nn.Module) -> dict[str, torch.Tensor]: ...

    def load_state(self, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None: ...

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: dict[str, torch.Tensor] | None):
        """{key: ω (N, D) or (N,)} for inspect (``has_omega`` combiners), from the weights file's tensors."""


#: method name -> "module:Class"; imported on first use
COMBINERS: dict[str, str | Combiner] = {
    "scalearn": "scalearn_cli.combiners.scalearn:ScaLearn",
    "average": "scalearn_cli.combiners.average:Average",
    "adapterfusion": "scalearn_cli.combiners.fusion:AdapterFusion",
    "adaptersoup": "scalearn_cli.combiners.soup:AdapterSoup",
    "lorahub": "scalearn_cli.combiners.lorahub:LoraHub",
}


def get_combiner(name: str) -> Combiner:
    """The combiner called ``name``; a one-line UsageError naming the known ones otherwise."""
    entry = lookup(COMBINERS, name)
    if entry is None:
        raise UsageError(f"--method must be one of {', '.join(COMBINERS)}, got '{name}'")
    return entry


def combiner_names() -> tuple[str, ...]:
    return tuple(COMBINERS)


class WeightedCombiner:
    """Shared plumbing of combiners that give each source a weight at each site (ω, 1/N, AdapterSoup's 1/k)."""

    weights_file: str | None = None
    default_lr = 6e-3
    default_patience: int | None = 5
    foldable = True
    has_omega = True
    variants: tuple[str, ...] = ()

    def spec(self, variant: str | None = None, options: dict[str, Any] | None = None) -> CombinerSpec:
        return CombinerSpec(self.name, None, dict(options or {}))  # type: ignore[attr-defined]

    def with_count(self, options: dict[str, Any] | None, key: str, default: int, flag: str) -> CombinerSpec:
        """A spec whose option ``key`` is a whole number >= 1 (``default`` when absent), or a one-line UsageError."""
        options = dict(options or {})
        value = options.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{flag} must be a whole number >= 1, got {value}")
        return CombinerSpec(self.name, None, options | {key: value})  # type: ignore[attr-defined]

    def prepare(self, spec: CombinerSpec, target: TargetContext) -> CombinerSpec:
        return spec

    def install(self, mixes: dict[str, nn.Module], module: nn.Module) -> nn.Module:
        for mix in mixes.values():
            object.__setattr__(mix, "weights", module)  # shared, owned by the Composition (not a child of each mix)
        return module

    def state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        return None
