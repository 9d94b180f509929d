"""The quickstart: the zoo's shipped shelf composed for a few-shot target whose rows ship with it.

The target is CR (customer-review sentiment, Hu & Liu 2004): a 320-row slice of its train split and its whole
376-row test split ship beside the catalog (``zoo/quickstart/cr``, with ``PROVENANCE.json``). The shelf is every
LoRA source the catalog ships (its own registry and the strong benchmark's), each resolved by id and commit and
sha256-verified exactly as ``transfer`` resolves ``zoo:NAME``; the shelf's own cr source is left out of the
composition, and its test score (all of cr's train rows, the same 376 test rows) is shown beside the comparison as
the single-adapter reference. Nothing is trained but the combiners and their heads: no network, no shelf data.

Methods: the average (ω fixed at 1/N), the reference every composition must beat, and ScaLearn++, whose ω is
shown and whose folded export is verified. The other combiners are left to ``scalearn transfer``: with ~20 sources
each full-backward composition costs minutes on a 2-core CPU (AdapterFusion's millions of parameters more), and
AdapterSoup ranks sources by their training texts, which a fresh clone does not hold.

Selection: ScaLearn's defaults keep the epoch with the lowest dev loss, and on a 32-row dev set that is the first
epoch (the head fits 288 rows within one epoch, then dev loss climbs), before ω has moved: the composition would
be the average. So the quickstart keeps no epoch that ends before ``MIN_STEPS`` steps (``--min-steps``, the small-
target benchmark's ``min-steps-40`` rule, which moved ω the most) and trains the head at a lower learning rate
than ω (``--head-lr``), so that ω, not the head, does the fitting. The average trains the same way, so that the
two rows differ only in whether ω is learned. docs/quickstart.md shows a run on the shipped shelf: the kept epoch,
how far ω moved and which sources it leans on (with ``transfer``'s defaults the first epoch is kept and the shares
stay at their uniform start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from scalearn_cli.combiners import TRANSFER_LR
from scalearn_cli.errors import UsageError
from scalearn_cli.export import export, verify
from scalearn_cli.inspection import omega_table, plot
from scalearn_cli.resolve import Resolved, Resolver
from scalearn_cli.shelf_tasks import family
from scalearn_cli.stages.common import DataOptions
from scalearn_cli.stages.transfer import TransferOptions, transfer
from scalearn_cli.tasks import get_task
from scalearn_cli.train import TrainConfig
from scalearn_cli.zoo.catalog import Catalog, built, load_catalog

TARGET = "cr"
#: (method, variant, label): the average is the reference; ScaLearn++ is inspected and exported
METHODS = (("average", None, "average (ω = 1/N)"), ("scalearn", "scalearn++", "ScaLearn++"))
INSPECTED = "scalearn++"  # the composition whose ω is shown and whose export is verified
MIN_STEPS = 40  # no epoch ending before this step is kept (the small-target benchmark's min-steps-40 rule)
HEAD_LR = 1e-3  # the head's learning rate, below ω's TRANSFER_LR: a head that fits first leaves ω at its start
WEIGHED_RATIO = 1.25  # below this largest/smallest source share, ω has weighed the sources about alike
MAX_LENGTH = 64  # reviews are one sentence: 64 tokens hold all but a handful
LEANED = 3  # the next steps compose by hand the sources with the largest shares of Σ|ω|


def run_quickstart(
    workdir: Path,
    epochs: int = 10,
    few_shot: int | None = None,
    model: str | None = None,
    registry: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Compose the shipped shelf for the shipped cr rows, inspect ω, fold and verify the export.

    ``model``: the zoo catalog (a base model id, a catalog slug or file; default the embedded MiniLM's).
    Returns ``{"target", "data", "workdir", "sources", "left_out", "rows", "omega", "export", "next"}``.
    """
    workdir = Path(workdir)
    catalog = load_catalog(model)
    data = DataOptions(task=TARGET, data_dir=target_data(catalog), few_shot=few_shot)
    resolver = Resolver(registry)
    sources, resolved, own = shelf(catalog, resolver, log)
    rows = [_reference_row(own)] if own else []
    for method, variant, label in METHODS:
        rows.append(_compose(workdir, resolved, data, (method, variant, label), epochs, resolver, log))
    inspected = workdir / "transfer" / INSPECTED
    omega = _omega(inspected, sources)
    leaned = [s["task"] for s in omega["sources"][:LEANED]]
    return {"target": TARGET, "data": str(data.data_dir), "workdir": str(workdir), "sources": sources,
            "left_out": own, "rows": rows, "omega": omega,
            "export": _export(workdir, inspected, resolver, log), "next": next_steps(workdir, leaned)}


def target_data(catalog: Catalog) -> Path:
    """The target's rows shipped beside the catalog (``quickstart/cr``: train.jsonl, test.jsonl, PROVENANCE.json)."""
    folder = catalog.path.parent / "quickstart" / TARGET
    if not (folder / "train.jsonl").is_file():
        raise UsageError(f"the zoo catalog {catalog.prefix} ships no quickstart target ({folder} has no train.jsonl); "
                         "run the quickstart from a source checkout")
    return folder


def shelf(catalog: Catalog, resolver: Resolver, log: Callable[[str], None]
          ) -> tuple[list[dict[str, Any]], list[Resolved], dict[str, Any] | None]:
    """Every shipped LoRA source but the target's own, resolved (id, commit, sha256) in catalog order; the shelf
    entries as the summary shows them; and the target's own shipped source (not composed), None when none ships."""
    # the shipped ones only, so that a copy the user built elsewhere never shadows a shipped one
    rows = [r for r in built(catalog) if r["adapter"] == "lora" and r["state"] == "shipped"]
    entries, resolved, own = [], [], None
    for row in rows:
        entry = {"name": row["name"], "task": row["task"], "family": family(row["task"]),
                 "ref": f"{row['repo_id']}@{row['revision']}", "zoo": f"zoo:{catalog.prefix}/{row['name']}",
                 "score": row["metrics"].get(row["main_metric"]), "metric": row["main_metric"],
                 "baseline": (row["baseline"] or {}).get(row["main_metric"])}
        if row["task"] == TARGET:  # not composed: its score and train rows are the reference
            training = resolver.source(entry["zoo"]).meta.training or {}
            own = {**entry, "train_examples": training.get("train_examples")}
            continue
        resolved.append(resolver.source(entry["zoo"]))  # pulled by id and commit, file hashes verified
        entries.append(entry)
    if len(resolved) < 2:
        raise UsageError(f"the zoo catalog {catalog.prefix} ships {len(resolved)} LoRA source(s) besides {TARGET}; "
                         "the quickstart composes two or more (see `scalearn zoo list`)")
    log(f"shelf: {len(resolved)} shipped LoRA sources, verified ({TARGET}'s own source left out)")
    return entries, resolved, own


def _reference_row(own: dict[str, Any]) -> dict[str, Any]:
    """The target's own full-data source as a comparison row (trained by the zoo; not composed, not retrained)."""
    return {"task": TARGET, "method": f"{TARGET}'s own LoRA (shelf)", "combiner": None, "variant": None,
            "n_sources": 1, "train_examples": own["train_examples"], "dev_examples": None, "test_examples": None,
            "parameters": None, "head_parameters": None, "score": own["score"], "metric": own["metric"],
            "kept_epoch": None, "epochs_run": None}


def transfer_config(epochs: int) -> TrainConfig:
    """The quickstart's training, the same for every method (so the rows differ only in ω): dev-loss selection
    after ``MIN_STEPS`` steps, the head at ``HEAD_LR``, ω at the paper's ``TRANSFER_LR``."""
    return TrainConfig(epochs=epochs, lr=TRANSFER_LR, max_length=MAX_LENGTH, patience=None, select_on="loss",
                       min_steps=MIN_STEPS, head_lr=HEAD_LR)


def _compose(workdir: Path, sources: list[Resolved], target: DataOptions, combiner: tuple[str, str | None, str],
             epochs: int, resolver: Resolver, log: Callable[[str], None]) -> dict[str, Any]:
    method, variant, label = combiner
    log(f"composing {len(sources)} sources with {label} ({epochs} epochs)")
    options = TransferOptions(tuple(sources), target, workdir / "transfer" / (variant or method), method, variant,
                              train=transfer_config(epochs), resolver=resolver, overwrite=True)
    return _meta_row(transfer(options), label, method, variant, len(sources))


def _omega(folder: Path, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """Each source's share of Σ|ω| (``scalearn inspect``), largest first, its family's mean share, a heatmap."""
    table = omega_table(folder)
    cells = [[c.get("mean", c.get("value")) for c in row["omega"]] for row in table["rows"]]  # (keys, N)
    shares = [{"index": s["index"], "ref": shelf["ref"], "task": shelf["task"], "family": shelf["family"],
               "share": s["share"], "mean_omega": sum(row[i] for row in cells) / len(cells)}
              for i, (s, shelf) in enumerate(zip(table["sources"], sources))]
    try:
        heatmap: str | None = str(plot(table, folder.parent / f"{INSPECTED}-omega.png"))
    except UsageError:  # no matplotlib: the table is enough
        heatmap = None
    return {"composition": str(folder), "variant": table["variant"], "plot": heatmap,
            "sources": sorted(shares, key=lambda s: -s["share"]), "families": family_shares(shares),
            "learned": table["learned"], "warning": table["warning"], "weighed": weighed(table["learned"])}


def family_shares(shares: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source family: how many sources, their summed share and the mean share per source, highest mean first
    (the mean says whether ω leans on a family; the sum grows with how many sources a family has)."""
    families: dict[str, list[float]] = {}
    for s in shares:
        families.setdefault(s["family"], []).append(s["share"])
    rows = [{"family": f, "sources": len(v), "share": sum(v), "mean_share": sum(v) / len(v)}
            for f, v in families.items()]
    return sorted(rows, key=lambda r: -r["mean_share"])


def weighed(learned: dict[str, Any] | None) -> str | None:
    """One plain line when ω moved but weighs the sources nearly alike (largest share under 1.25× the smallest):
    the composition is then close to a rescaled average, whatever the movement says."""
    if not learned or learned["smallest_share"] <= 0:
        return None
    ratio = learned["largest_share"] / learned["smallest_share"]
    if ratio >= WEIGHED_RATIO:
        return None
    return (f"ω weighs the sources nearly alike (largest share {ratio:.2f}× the smallest): on a few hundred rows "
            "ω moves the sources together more than apart, so this composition is close to their average")


def _export(workdir: Path, folder: Path, resolver: Resolver, log: Callable[[str], None]) -> dict[str, Any]:
    """Fold the composition into the base weights (``export --format merged``) and check logit parity (``verify``)."""
    out = workdir / "export" / f"{INSPECTED}-merged"
    log(f"folding {folder.name} into the base weights ({out}) and checking its logits")
    export(folder, out, "merged", overwrite=True, resolver=resolver)
    result = verify(out, folder, resolver=resolver)
    keep = ("max_abs_diff", "ok", "samples", "tolerance")
    return {"out": str(out), "format": "merged", **{k: result[k] for k in keep}}


def next_steps(workdir: Path, leaned: Sequence[str] = ("sst2", "mpqa", "subj")) -> list[str]:
    """The commands that repeat this by hand over the sources ω leaned on most (``leaned``: their task names),
    and the start on another model (``#`` lines)."""
    data = "zoo/quickstart/cr"
    picked = " ".join(f"-s zoo:{task}" for task in leaned)
    return [
        "# the shelf, then the composition by hand over the sources ω leaned on",
        "scalearn zoo list",
        f"scalearn transfer --task cr --data-dir {data} --variant scalearn++ --min-steps {MIN_STEPS} "
        f"--head-lr {HEAD_LR:g} {picked} --out cr-scalearn",
        f"scalearn inspect {workdir / 'transfer' / INSPECTED} --plot omega.png",
        "# another model: train sources from the Hub (online), compose them as above",
        "scalearn train-source --model roberta-base --task sst2 --max-train-samples 4000 --out sst2-rb",
    ]


def _meta_row(meta: dict[str, Any], label: str, method: str, variant: str | None, n: int) -> dict[str, Any]:
    task, training = meta["task"]["name"], meta["training"]
    h, k = int(meta["head"]["hidden_size"]), int(meta["head"]["num_outputs"])
    return {
        "task": task, "method": label, "combiner": method, "variant": variant, "n_sources": n,
        "train_examples": training["train_examples"], "dev_examples": training.get("dev_examples"),
        "test_examples": training.get("test_examples"),
        "parameters": meta["adapter"]["parameters"],  # what the method learns besides the head
        "head_parameters": h * h + h + h * k + k,  # TaskHead: dense (h, h) + out_proj (k, h), with biases
        "score": float(meta["metrics"]["test"].get(get_task(task).main_metric, float("nan"))),
        "metric": get_task(task).main_metric,
        "kept_epoch": training.get("best_epoch"), "epochs_run": len(training.get("history") or []),
    }
