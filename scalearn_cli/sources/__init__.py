"""Source adapter kinds behind one protocol and one table.

As in peft (a folder per method, one registration line), a kind is one module with a class implementing
:class:`SourceKind`, plus one line in :data:`SOURCE_KINDS`. Everything else — training, saving, loading one
source, composing N of them, exporting, pruning, the zoo and the CLI — asks the table:

* ``attach`` puts a fresh trainable adapter into a frozen encoder; ``save`` writes it; ``load`` puts a saved
  one back (frozen) for scoring it alone;
* ``read_sites`` reads a saved adapter as frozen low-rank tensors per composition *site*
  (``a(x) = up · φ(down · x + down_bias) + up_bias``, φ = the kind's ``activation``);
* ``install`` puts one mix of N sources per site into the encoder (see ``scaling.LowRankMix``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from scalearn_cli.errors import CompositionError
from scalearn_cli.plugins import lookup

Activation = Literal["relu", "identity"]


@dataclass(frozen=True)
class SiteWeights:
    """One source at one site: ``down (r, D_in)``, ``up (D_out, r)``, optional ``down_bias (r,)``,
    ``up_bias (D_out,)``."""

    down: torch.Tensor
    up: torch.Tensor
    down_bias: torch.Tensor | None = None
    up_bias: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass
class Attached:
    """A fresh trainable adapter inside an encoder: the module to run, its trainable tensors, what ``save`` needs,
    and the settings as applied (a kind may fill in defaults that depend on the model; None: as given)."""

    model: nn.Module
    params: list[nn.Parameter]
    handle: Any
    settings: Any = None


@runtime_checkable
class SourceKind(Protocol):
    """What a source adapter kind provides (see the module docstring)."""

    name: str
    #: φ between down and up: ``identity`` kinds are linear, so their compositions fold into one LoRA
    activation: Activation
    #: default learning rate of ``train-source`` for this kind
    default_lr: float

    def settings(self, options: dict[str, Any] | None = None) -> Any:
        """The kind's settings dataclass from a dict (zoo recipe, CLI options, scalearn.json); defaults for {}."""

    def attach(self, encoder: nn.Module, settings: Any, base_model_id: str) -> Attached: ...

    def save(self, folder: Path, attached: Attached, settings: Any) -> None: ...

    def load(self, encoder: nn.Module, folder: Path) -> nn.Module:
        """The encoder with the saved adapter in it, frozen (returns the module to run)."""

    def read_sites(self, folder: Path) -> dict[str, SiteWeights]: ...

    def install(self, encoder: nn.Module, mixes: dict[str, nn.Module]) -> None: ...

    def card_usage(self, meta: dict[str, Any]) -> str:
        """How to load such an adapter, for its model card."""


#: kind name -> "module:Class"; imported on first use so `scalearn --help` stays instant
SOURCE_KINDS: dict[str, str | SourceKind] = {
    "lora": "scalearn_cli.sources.lora:LoraKind",
    "bottleneck": "scalearn_cli.sources.bottleneck:BottleneckKind",
}


def register_kind(kind: SourceKind) -> SourceKind:
    """Add a kind at run time (plugins, tests): the same as one more line in :data:`SOURCE_KINDS`."""
    SOURCE_KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> SourceKind:
    """The kind called ``name``; a clear error for anything else (never a silent fall-through)."""
    entry = lookup(SOURCE_KINDS, name)
    if entry is None:
        raise CompositionError(
            f"unknown adapter kind '{name}'; known kinds: {', '.join(SOURCE_KINDS)} (upgrade scalearn if the "
            f"folder was written by a newer one)"
        )
    return entry


def kind_names() -> tuple[str, ...]:
    return tuple(SOURCE_KINDS)
