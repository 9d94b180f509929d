"""Combiners behind one protocol and one table: what mixes N frozen sources at every site.

As AdapterHub's composition blocks, a combiner is a small value (:class:`CombinerSpec`: method, variant,
options, with ``to_dict/from_dict``) plus the module it builds. Adding one is one module with a class
implementing :class:`Combiner` and one :func:`register_combiner` line at the end of this file: its options (the
CLI builds ``scalearn transfer``'s flags from them) and what commands may do with it (:data:`ACTIONS`, asked by
export, inspect, prune and transfer as AdapterHub's ``ALLOWED_NESTINGS`` is asked) are declared there, as data.
Torch-free at import: the CLI reads the table before any model code loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from scalearn_cli.combiners.options import Option, fraction, indices, numbers, one_of, positive, validate, whole
from scalearn_cli.errors import UsageError
from scalearn_cli.plugins import lookup

if TYPE_CHECKING:
    import torch
    from torch import nn


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
    encoder: "nn.Module"
    tokenizer: Any
    max_length: int = 128
    seed: int = 0  # the run's seed: combiners with randomness (DARE, Arrow's power iteration) record it


@dataclass
class BuildContext:
    """What a combiner may read while it is built: the sources (in order) and the model the mixes sit in."""

    sources: list[Any]  # resolve.Resolved
    encoder: "nn.Module"  # its module order is the order PEFT walks the sites in


@runtime_checkable
class Combiner(Protocol):
    name: str
    label: str  # for messages and cards, e.g. "AdapterFusion"
    #: the file that holds what it learned between the sources (None: nothing learned)
    weights_file: str | None
    default_lr: float
    default_patience: int | None
    variants: tuple[str, ...]

    def spec(self, variant: str | None = None, options: dict[str, Any] | None = None) -> CombinerSpec:
        """A validated spec (unknown variants or options: a UsageError)."""

    def prepare(self, spec: CombinerSpec, target: TargetContext) -> CombinerSpec:
        """Choices made from the target data before building (AdapterSoup picks its sources); else ``spec``."""

    def build(self, mixes: dict[str, "nn.Module"], spec: CombinerSpec, context: BuildContext) -> "nn.Module":
        """The combiner's module, set as every site's ``mix.combiner`` (owned by the Composition, not the mixes)."""

    def search(self, comp: Any, model: "nn.Module", prepared: Any, seed: int) -> CombinerSpec:
        """Weights fixed without gradients before training (LoraHub's search); else ``comp.spec`` unchanged."""

    def state(self, module: "nn.Module") -> dict[str, "torch.Tensor"]: ...

    def load_state(self, module: "nn.Module", tensors: dict[str, "torch.Tensor"]) -> None: ...

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: dict[str, "torch.Tensor"] | None):
        """{key: ω (N, D) or (N,)} for inspect (combiners that allow it), from the weights file's tensors."""


#: what a command may do with a composition, declared per combiner in its registration line
ACTIONS = {
    "fold": "export (its mix is one fixed LoRA per site over LoRA sources)",
    "inspect": "inspect (it has per-source weights ω)",
    "prune": "prune (its ω is learned, so it ranks the sources)",
    "train_omega": "--sparsity and an initial ω (it learns ω by gradient)",
}


@dataclass(frozen=True)
class Registration:
    """One line of the table: where the combiner lives, its options and what commands may do with it."""

    target: str | Combiner  # "module:Class" (imported on first use) or an instance
    options: tuple[Option, ...] = ()
    allows: frozenset[str] = frozenset()


#: method name -> Registration; filled by :func:`register_combiner` (the lines at the end of this module)
COMBINERS: dict[str, Registration] = {}
#: the method ``transfer`` uses when none is named
DEFAULT_METHOD = "scalearn"
_INSTANCES: dict[str, Any] = {}


def register_combiner(name: str, target: str | Combiner, options: tuple[Option, ...] = (),
                      allows: tuple[str, ...] = ()) -> None:
    """Add a combiner; a name registered twice is refused (as PEFT's ``register_peft_method``)."""
    if name in COMBINERS:
        raise UsageError(f"a combiner named '{name}' is already registered; choose another name")
    unknown = sorted(set(allows) - set(ACTIONS))
    if unknown:
        raise UsageError(f"combiner '{name}' declares unknown actions {unknown}; known: {', '.join(ACTIONS)}")
    COMBINERS[name] = Registration(target, tuple(options), frozenset(allows))


def unregister_combiner(name: str) -> None:
    """Remove a combiner added at run time (tests, plugins)."""
    COMBINERS.pop(name, None)
    _INSTANCES.pop(name, None)


def get_combiner(name: str) -> Combiner:
    """The combiner called ``name``; a one-line UsageError naming the known ones otherwise."""
    if name not in COMBINERS:
        raise UsageError(f"--method must be one of {', '.join(COMBINERS)}, got '{name}'")
    if name not in _INSTANCES:
        _INSTANCES[name] = lookup({name: COMBINERS[name].target}, name)
    return _INSTANCES[name]


def combiner_names() -> tuple[str, ...]:
    return tuple(COMBINERS)


def options_of(name: str) -> tuple[Option, ...]:
    if name not in COMBINERS:
        get_combiner(name)  # the one-line error naming the known methods
    return COMBINERS[name].options


def all_options() -> list[Option]:
    """Every declared option once (by flag), in table order: what the CLI adds to ``transfer``."""
    seen: dict[str, Option] = {}
    for registration in COMBINERS.values():
        for option in registration.options:
            seen.setdefault(option.flag, option)
    return list(seen.values())


def check_options(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` checked against what ``name`` declares (defaults filled in)."""
    return validate(options_of(name), options, name)


def refuse_foreign_flags(name: str, given: dict[str, Any]) -> None:
    """A combiner flag given for another method is a one-line error, never silently ignored."""
    own = {o.flag for o in options_of(name)}
    for flag, value in given.items():
        if value is not None and flag not in own:
            owners = [m for m, r in COMBINERS.items() if any(o.flag == flag for o in r.options)]
            raise UsageError(f"{flag} applies to --method {' or '.join(owners)}, not {name}; drop it")


def allows(name: str, action: str) -> bool:
    """Whether the compatibility table lets a command do ``action`` with a ``name`` composition."""
    return action in COMBINERS[name].allows if name in COMBINERS else False


def require(name: str, action: str, folder: Any = "this composition", error: type[Exception] = UsageError) -> None:
    """A one-line ``error`` when the table does not allow ``action`` for ``name`` (the ones that do, named)."""
    if allows(name, action):
        return
    able = [m for m, r in COMBINERS.items() if action in r.allows]
    label = get_combiner(name).label if name in COMBINERS else name
    raise error(f"{folder} is a {label} composition, which does not allow {ACTIONS[action]}; "
                     f"that works on {', '.join(able) or 'no registered method'} compositions")


#: the transfer learning rate unless ``--lr`` says otherwise: the paper's, for ScaLearn's ω and the head, and every
#: weighted combiner's (``WeightedCombiner.default_lr``); the ``--select`` run uses it whatever the method
TRANSFER_LR = 6e-3


class WeightedCombiner:
    """Shared plumbing of combiners that give each source a weight at each site (ω, 1/N, AdapterSoup's 1/k)."""

    weights_file: str | None = None
    default_lr = TRANSFER_LR
    default_patience: int | None = 5
    variants: tuple[str, ...] = ()

    def spec(self, variant: str | None = None, options: dict[str, Any] | None = None) -> CombinerSpec:
        return CombinerSpec(self.name, None, check_options(self.name, options))  # type: ignore[attr-defined]

    def prepare(self, spec: CombinerSpec, target: TargetContext) -> CombinerSpec:
        return spec

    def search(self, comp: Any, model: Any, prepared: Any, seed: int) -> CombinerSpec:
        return comp.spec  # nothing to search: the weights are what build made

    def install(self, mixes: dict[str, Any], module: Any) -> Any:
        """Set ``module`` as every site's combiner (shared, owned by the Composition, not a child of each mix)."""
        for mix in mixes.values():
            object.__setattr__(mix, "combiner", module)
        return module

    def state(self, module: Any) -> dict[str, Any]:
        return {}

    def load_state(self, module: Any, tensors: dict[str, Any]) -> None:
        return None


# ---- the table: one line per combiner (options and allowed actions are data) ------------------------------
register_combiner("scalearn", "scalearn_cli.combiners.scalearn:ScaLearn",
                  allows=("fold", "inspect", "prune", "train_omega"))
register_combiner("average", "scalearn_cli.combiners.average:Average", allows=("fold", "inspect"))
register_combiner("adapterfusion", "scalearn_cli.combiners.fusion:AdapterFusion")
register_combiner("adaptersoup", "scalearn_cli.combiners.soup:AdapterSoup", allows=("fold", "inspect"), options=(
    Option("k", int, 3, "adaptersoup: how many sources to average.", "--soup-k", whole(1)),))
register_combiner("lorahub", "scalearn_cli.combiners.lorahub:LoraHub", allows=("fold", "inspect"), options=(
    Option("budget", int, 40, "lorahub: loss evaluations of its gradient-free weight search (LoraHub's 40).",
           "--lorahub-budget", whole(1)),))
register_combiner("merge", "scalearn_cli.combiners.merge:Merge", allows=("fold",), options=(
    Option("merge_type", str, "linear", "merge: PEFT add_weighted_adapter's combination_type (linear, cat, svd, "
           "ties, ties_svd, dare_linear, dare_ties, dare_linear_svd, dare_ties_svd, magnitude_prune, "
           "magnitude_prune_svd).", "--merge-type",
           one_of("linear", "cat", "svd", "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd",
                  "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd")),
    Option("density", float, None, "merge: fraction of entries kept by ties, dare and magnitude_prune (PEFT's "
           "density).", "--density", fraction),
    Option("majority_sign_method", str, "total", "merge: ties' sign election, total or frequency (PEFT's "
           "majority_sign_method).", "--majority-sign-method", one_of("total", "frequency")),
    Option("weights", str, None, "merge: one weight per source, comma-separated (default: 1/N each).",
           "--merge-weights", numbers),
    Option("svd_rank", int, None, "merge: rank of the *_svd types' result (PEFT's svd_rank; default: the "
           "sources' largest).", "--svd-rank", whole(1)),))
register_combiner("arrow", "scalearn_cli.combiners.arrow:Arrow", options=(
    Option("top_k", int, 3, "arrow: experts mixed per token (PEFT ArrowConfig's top_k).", "--top-k", whole(1)),
    Option("router_temperature", float, 1.0, "arrow: softmax temperature of the router (ArrowConfig's "
           "router_temperature).", "--router-temperature", positive),
    Option("gks_sources", str, None, "arrow: positions (from 0) of sources used as general adapters for "
           "GenKnowSub (ArrowConfig's use_gks); the rest are the experts.", "--gks-sources", indices),))
