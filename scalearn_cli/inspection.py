"""What a composition learned: ω per site (or shared ++ group) and source, and each source's share.

Read straight from ``omega.safetensors`` and ``composition.json`` (no model is built). A vector ω_i (D,) is
summarised by its mean and L2 norm, a scalar ω_i by its value. A source's *share* is its part of Σ|ω| over every
ω entry of the composition: share_i = Σ_{keys, d} |ω_{i,d}| / Σ_{j, keys, d} |ω_{j,d}|. In the ++ variants one
tensor serves every layer, so it counts once (weighting it by the number of layers would not change the shares).
The ``average`` baseline reports its fixed 1/N, AdapterSoup its 1/k on the k sources it chose; AdapterFusion has
no ω (its weights depend on the input). Each combiner says what its ω is (``Combiner.omega``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from scalearn_cli.artifacts import CompositionRecord, load_tensors, read_folder, read_metadata
from scalearn_cli.combiners import CombinerSpec, allows, get_combiner, require
from scalearn_cli.compose import read_record
from scalearn_cli.errors import UsageError
from scalearn_cli.scaling import shared_key

SHARE_DEFINITION = "share of sum |omega| over all omega entries (sites x dims) of the composition"
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h)\.(\d+|\*)\.")


def read_composition(folder: Path) -> CompositionRecord:
    """composition.json of a `scalearn transfer` folder (a one-line UsageError for any other folder)."""
    folder = Path(folder)
    kind = read_metadata(folder).get("kind")
    if kind != "composition":
        raise UsageError(f"{folder} is a {kind}, not a composition; pass a `scalearn transfer` folder")
    return read_record(folder)


def load_omega(folder: Path) -> tuple[dict[str, Any], CompositionRecord, dict[str, torch.Tensor]]:
    """(scalearn.json, composition.json, {key: ω (N, D) or (N,)}) of a composition folder, files verified."""
    folder = Path(folder)
    record = read_composition(folder)
    found = read_folder(folder, kind="composition")
    require(record.method, "inspect", folder)  # the compatibility table: which combiners have an ω to show
    combiner = get_combiner(record.method)
    spec = CombinerSpec(record.method, record.variant, record.options)
    tensors = load_tensors(folder / combiner.weights_file) if combiner.weights_file else None
    return found.meta.to_dict(), record, combiner.omega(spec, list(record.sites), record.n_sources, tensors)


def omega_table(folder: Path) -> dict[str, Any]:
    """ω per key (site, or ++ group) and source, plus each source's share (see the module docstring)."""
    meta, record, omega = load_omega(folder)
    vector = any(value.dim() == 2 for value in omega.values())  # (N, D): a vector ω per source
    rows = []
    for key, value in omega.items():  # (N, D) or (N,)
        match = _LAYER.search(key)
        cells = (
            [{"mean": float(v.mean()), "norm": float(v.norm())} for v in value]
            if value.dim() == 2 else [{"value": float(v)} for v in value]
        )
        rows.append({"key": key, "layer": match.group(1) if match else None, "module": shared_key(key),
                     "omega": cells})
    mass = torch.stack([v.abs().reshape(v.shape[0], -1).sum(1) for v in omega.values()]).sum(0)  # (N,)
    total = float(mass.sum())
    sources = [
        {"index": i, "ref": s.ref, "task": s.task, "l1": float(mass[i]),
         "share": float(mass[i]) / total if total > 0 else 0.0}
        for i, s in enumerate(record.sources)
    ]
    learned = _learned(meta, record, omega)
    return {
        "composition": str(folder), "task": meta["task"]["name"], "method": record.method,
        "variant": record.variant, "adapter_kind": record.adapter_kind, "vector": vector,
        "share_of": SHARE_DEFINITION, "sources": sources, "rows": rows,
        "learned": learned, "warning": omega_warning(learned),
        **{name: getattr(record, name) for name in ("shelf", "selection") if getattr(record, name) is not None},
    }


def plot(table: dict[str, Any], path: Path) -> Path:
    """Heatmap of ω (mean of a vector ω, or the scalar) with one row per site/group and one column per source."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("--plot needs matplotlib: pip install 'scalearn[plot]' (or matplotlib)") from exc
    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UsageError(f"--plot must name a .png, .pdf or .svg file, got '{path.name}'")
    values = [[c.get("mean", c.get("value")) for c in row["omega"]] for row in table["rows"]]
    labels = [row["key"].removeprefix("encoder.") for row in table["rows"]]
    columns = [f"{s['index']}: {s['task'] or Path(s['ref']).name}\n({100 * s['share']:.0f}%)" for s in table["sources"]]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(columns), 1.2 + 0.28 * len(labels)))
    image = ax.imshow(values, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    stat = "mean ω" if table["vector"] else "ω"
    ax.set_title(f"{table['variant'] or table['method']} on {table['task']}: {stat} per site and source", fontsize=9)
    fig.colorbar(image, ax=ax, label=stat)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: below this mean relative change from its start, ω has not been learned (the composition is its initial mix)
BARELY_MOVED = 0.05


def omega_movement(omega: dict[str, torch.Tensor], start: float) -> dict[str, float]:
    """How far ω moved from its start value (ScaLearn's 2/N): the mean over entries of |ω − start| / start, and
    the largest and smallest source share (see the module docstring). ``omega``: {key: (N, D) or (N,)}."""
    flat = torch.cat([v.reshape(v.shape[0], -1) for v in omega.values()], dim=1)  # (N, entries)
    mass = flat.abs().sum(1)
    shares = mass / mass.sum() if float(mass.sum()) > 0 else torch.zeros_like(mass)
    return {"start": start, "mean_relative_change": float((flat - start).abs().mean() / abs(start)),
            "largest_share": float(shares.max()), "smallest_share": float(shares.min())}


def omega_summary(folder: Path) -> dict[str, Any] | None:
    """What a trained composition's ω did: its movement (``omega_movement``) with the kept epoch of the epochs run
    and the steps taken; None for a combiner whose ω is not learned (average, AdapterSoup, AdapterFusion, LoraHub)."""
    if not allows(read_record(Path(folder)).method, "train_omega"):  # e.g. AdapterFusion: no ω at all to load
        return None
    return _learned(*load_omega(folder))


def _learned(meta: dict[str, Any], record: CompositionRecord, omega: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    if not allows(record.method, "train_omega") or not omega:
        return None
    return {**omega_movement(omega, 2.0 / record.n_sources), **kept_epoch(meta["training"])}


def kept_epoch(training: dict[str, Any]) -> dict[str, Any]:
    """The kept epoch, the epochs run and the steps taken, from a scalearn.json's ``training``."""
    return {"kept_epoch": training.get("best_epoch"), "epochs_run": len(training.get("history") or []),
            "steps": training.get("steps")}


def omega_warning(summary: dict[str, Any] | None) -> str | None:
    """One line when ω may not have been learned: it barely moved from its start (the composition is close to the
    plain average), or the kept epoch is the first of several (selection stopped it before it could move)."""
    if not summary:
        return None
    moved = summary["mean_relative_change"]
    first = summary.get("kept_epoch") == 1 and (summary.get("epochs_run") or 0) > 1
    if moved >= BARELY_MOVED and not first:
        return None
    said = (f"kept epoch {summary['kept_epoch']} of {summary['epochs_run']}, {summary['steps']} steps, ω "
            f"{100 * moved:.1f}% from its start")
    if moved < BARELY_MOVED:
        return (f"ω barely moved ({said}): the composition is about the plain average of its sources; try more "
                "--epochs, --min-steps N (keep no epoch before N steps) or a --head-lr below --lr")
    return (f"the kept epoch is the first ({said}): a dev set of a few dozen rows can prefer the start of training; "
            "try --min-steps N (keep no epoch before N steps) or a larger dev set (--max-dev-samples)")


#: where composing all of a wide shelf over a few-shot target lost to a learned selection of a few of its sources
#: (docs/benchmarks-shelf.md: few-shot RTE, 22 sources, 16 rows; learned K = 4 above all N beyond seed noise)
SELECT_HINT_SOURCES, SELECT_HINT_ROWS = 16, 100


def selection_hint(record: CompositionRecord, train_examples: int | None) -> str | None:
    """One line suggesting ``--select K`` when ω was learned over many sources from a few-shot target's rows and no
    selection was made; None otherwise."""
    if (record.selection is not None or not allows(record.method, "train_omega")
            or record.n_sources < SELECT_HINT_SOURCES or train_examples is None or train_examples > SELECT_HINT_ROWS):
        return None
    return (f"{record.n_sources} sources learned from {train_examples} training rows: on few-shot targets a learned "
            "selection of a few sources scored above composing the whole shelf (docs/benchmarks-shelf.md); try "
            "--select 4 (or `scalearn select`) and compare")


def learned_line(summary: dict[str, Any]) -> str:
    """The ω summary in one line: kept epoch of epochs run, steps, mean change from the start, source shares."""
    return (f"kept epoch {summary['kept_epoch']} of {summary['epochs_run']} ({summary['steps']} steps); ω moved "
            f"{100 * summary['mean_relative_change']:.1f}% from its start on average; source shares "
            f"{100 * summary['smallest_share']:.1f}–{100 * summary['largest_share']:.1f}%")
