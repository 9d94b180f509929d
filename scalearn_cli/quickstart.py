"""The quickstart workflow on the embedded defaults: shelf of sources -> few-shot transfer -> ω, export, table.

The target (demo-paraphrase, 64 labelled examples) has no full-data adapter on the shelf: the composition
can only use the target's own few-shot LoRA and adapters of *other* tasks, one from the zoo through the
local registry (by id and commit), one trained and saved by plain PEFT code (``demo_peft``), as in the
paper's few-shot setting. Every combiner then learns from the same 64 examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from scalearn_cli.backbone import resolve_model_path
from scalearn_cli.combiners import TRANSFER_LR
from scalearn_cli.data.demo import write_demo_tasks
from scalearn_cli.demo_peft import train_peft_lora
from scalearn_cli.errors import UsageError
from scalearn_cli.export import export, verify
from scalearn_cli.inspection import omega_table, plot
from scalearn_cli.registry import get_registry
from scalearn_cli.resolve import Resolver
from scalearn_cli.stages.common import DataOptions
from scalearn_cli.stages.source import train_source
from scalearn_cli.stages.transfer import TransferOptions, transfer
from scalearn_cli.tasks import get_task
from scalearn_cli.train import TrainConfig
from scalearn_cli.zoo.build import build
from scalearn_cli.zoo.catalog import load_catalog

TARGET = "demo-paraphrase"
ZOO_TASKS = ("demo-sentiment",)  # built by the zoo into the registry
PEFT_TASK = "demo-nli"  # trained and saved by plain PEFT
#: (method, variant, label, learning rate, options, needs source texts); AdapterFusion at 1e-3, as the paper's 5e-5
#: is tuned for 30 full epochs; AdapterSoup ranks sources by their training texts, which a plain PEFT folder lacks
METHODS = (
    ("average", None, "average (1/N)", TRANSFER_LR, {}, False),
    ("adaptersoup", None, "AdapterSoup (k=1)", TRANSFER_LR, {"k": 1}, True),
    ("adapterfusion", None, "AdapterFusion (lr 1e-3)", 1e-3, {}, False),
    ("scalearn", "scalearn++", "ScaLearn++", TRANSFER_LR, {}, False),
    ("scalearn", "scalearn-uniform++", "ScaLearnUniform++", TRANSFER_LR, {}, False),
)
INSPECTED = "scalearn++"  # the composition whose ω is shown and whose export is verified


def run_quickstart(
    workdir: Path,
    epochs: int = 10,
    few_shot: int = 64,
    registry: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build the shelf, compare every combiner on a few-shot target, then inspect ω and verify a folded export.

    Returns ``{"target", "few_shot", "sources", "rows", "omega", "export", "next"}`` (see ``cli/quickstart.py``).
    """
    workdir = Path(workdir)
    data_root = workdir / "data"
    write_demo_tasks(data_root / "demo")
    log(f"demo tasks written to {data_root / 'demo'}")
    sources, own = _shelf(workdir, data_root, epochs, few_shot, registry, log)
    target = DataOptions(task=TARGET, data_dir=data_root / "demo" / TARGET, few_shot=few_shot)
    rows = [_meta_row(own, "single LoRA (few-shot)", "lora", None, 1)]
    for method, variant, label, lr, options, texts in METHODS:
        pool = [s["ref"] for s in sources if not texts or s["format"] == "scalearn"]  # folders that record texts
        rows.append(_compose(workdir, pool, target, (method, variant, options), label, lr, epochs, registry, log))
    inspected = workdir / "transfer" / INSPECTED
    soup = next(row for row, entry in zip(rows[1:], METHODS) if entry[5])
    notes = ["AdapterSoup ranks sources by their training texts; the plain PEFT folder records",
             f"none, so AdapterSoup chose 1 of the other {soup['n_sources']}"]
    return {"target": TARGET, "few_shot": few_shot, "workdir": str(workdir), "sources": sources, "rows": rows,
            "notes": notes,
            "omega": _omega(inspected, sources), "export": _export(workdir, inspected, registry, log),
            "next": next_steps(workdir)}


def _shelf(workdir: Path, data_root: Path, epochs: int, few_shot: int, registry: str | None,
           log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The sources, in composition order: the target's few-shot LoRA, zoo sources (registry), a plain PEFT LoRA."""
    catalog = load_catalog(None)
    recipes = catalog.select(list(ZOO_TASKS))
    built = build(catalog, get_registry(registry), recipes, data_root, log=log)
    log(f"few-shot target {TARGET}: training a single LoRA on {few_shot} examples")
    own_dir = workdir / "sources" / f"{TARGET}-fewshot"
    config = TrainConfig(epochs=epochs, lr=2e-3, max_length=64, patience=None)  # select_on auto: metric (few-shot)
    own = train_source(DataOptions(task=TARGET, data_dir=data_root / "demo" / TARGET, few_shot=few_shot), own_dir,
                       "lora", None, config, catalog.base_model, overwrite=True,
                       pooling=recipes[0].pooling)  # the zoo sources' pooling
    peft_dir = workdir / "sources" / f"{PEFT_TASK}-peft"
    log(f"{PEFT_TASK}: training a LoRA with plain PEFT (get_peft_model + save_pretrained) into {peft_dir}")
    spec = get_task(PEFT_TASK)
    peft = train_peft_lora(data_root / "demo" / PEFT_TASK, peft_dir, resolve_model_path(catalog.base_model),
                           catalog.base_model, tuple(f for group in spec.text_fields for f in group),
                           len(spec.label_names or ()))
    fewshot = _source(own_dir, TARGET, f"few-shot LoRA ({few_shot} ex., scalearn train-source)", "scalearn")
    zoo = [_source(f"{b['repo_id']}@{b['revision']}", b["task"], "zoo LoRA, pulled from the registry", "scalearn",
                   _main(b["task"], b["metrics"])) for b in built]
    plain = _source(peft_dir, PEFT_TASK, "LoRA saved by plain PEFT (no scalearn.json)", "peft",
                    100 * peft["validation_accuracy"], files=peft["files"])
    return [fewshot, *zoo, plain], own


def _source(ref: Path | str, task: str, origin: str, fmt: str, score: float | None = None, **extra: Any
            ) -> dict[str, Any]:
    """One shelf entry; ``score`` is on the source's own task (its test split), None for the target's own."""
    metric = None if score is None else get_task(task).main_metric
    return {"ref": str(ref), "task": task, "origin": origin, "format": fmt, "score": score, "metric": metric, **extra}


def _compose(workdir: Path, sources: list[str], target: DataOptions, combiner: tuple[str, str | None, dict],
             label: str, lr: float, epochs: int, registry: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    method, variant, chosen = combiner
    log(f"composing {len(sources)} sources with {label}")
    options = TransferOptions(tuple(sources), target, workdir / "transfer" / (variant or method), method, variant,
                              options=dict(chosen),
                              train=TrainConfig(epochs=epochs, lr=lr, max_length=64, patience=None),
                              resolver=Resolver(registry), overwrite=True)
    return _meta_row(transfer(options), label, method, variant, len(sources))


def _omega(folder: Path, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """Each source's share of Σ|ω| (``scalearn inspect``), and a heatmap when matplotlib is installed."""
    table = omega_table(folder)
    cells = [[c.get("mean", c.get("value")) for c in row["omega"]] for row in table["rows"]]  # (keys, N)
    shares = [{"index": s["index"], "ref": s["ref"], "task": shelf["task"], "share": s["share"],
               "mean_omega": sum(row[i] for row in cells) / len(cells)}
              for i, (s, shelf) in enumerate(zip(table["sources"], sources))]
    try:
        heatmap: str | None = str(plot(table, folder.parent / f"{INSPECTED}-omega.png"))
    except UsageError:  # no matplotlib: the table is enough
        heatmap = None
    # whether ω was learned at all (kept epoch, steps, movement from 2/N) and, when not, why: the summary says it
    return {"composition": str(folder), "variant": table["variant"], "sources": shares, "plot": heatmap,
            "learned": table["learned"], "warning": table["warning"]}


def _export(workdir: Path, folder: Path, registry: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Fold the composition into the base weights (``export --format merged``) and check logit parity (``verify``)."""
    out = workdir / "export" / f"{INSPECTED}-merged"
    log(f"folding {folder.name} into the base weights ({out}) and checking its logits")
    export(folder, out, "merged", overwrite=True, resolver=Resolver(registry))
    result = verify(out, folder, resolver=Resolver(registry))
    keep = ("max_abs_diff", "ok", "samples", "tolerance")
    return {"out": str(out), "format": "merged", **{k: result[k] for k in keep}}


def next_steps(workdir: Path) -> list[str]:
    """The commands that repeat this on real GLUE data, then on a Hub model (``#`` lines say what follows)."""
    zoo = "scalearn-zoo/minilm-l6"
    return [
        "# real GLUE: DIR/glue/<task>/{train,validation}.jsonl, nyu-mll/glue columns",
        "scalearn zoo build --tasks sst2,qnli,mrpc --adapter lora --data-root DIR",
        "scalearn train-source --task rte --data-dir DIR/glue/rte --few-shot 64 --out rte-64",
        f"scalearn transfer --task rte --data-dir DIR/glue/rte --few-shot 64 --variant scalearn++ -s rte-64 "
        f"-s {zoo}-sst2-lora -s {zoo}-qnli-lora -s {zoo}-mrpc-lora --out rte-scalearn",
        "# a Hub model, data from the Hub (online: no HF_HUB_OFFLINE, no --data-dir)",
        "scalearn train-source --model roberta-base --task sst2 --max-train-samples 4000 --out sst2-rb",
        "scalearn train-source --model roberta-base --task rte --few-shot 64 --out rte-64-rb",
        "scalearn transfer --task rte --few-shot 64 --variant scalearn++ -s rte-64-rb -s sst2-rb --out rte-rb",
    ]


def _main(task: str, metrics: dict[str, float]) -> float:
    return float(metrics.get(get_task(task).main_metric, float("nan")))


def _meta_row(meta: dict[str, Any], label: str, method: str, variant: str | None, n: int) -> dict[str, Any]:
    task = meta["task"]["name"]
    h, k = int(meta["head"]["hidden_size"]), int(meta["head"]["num_outputs"])
    return {
        "task": task, "method": label, "combiner": method, "variant": variant, "n_sources": n,
        "train_examples": meta["training"]["train_examples"],
        "parameters": meta["adapter"]["parameters"],  # what the method learns besides the head
        "head_parameters": h * h + h + h * k + k,  # TaskHead: dense (h, h) + out_proj (k, h), with biases
        "score": _main(task, meta["metrics"]["test"]), "metric": get_task(task).main_metric,
    }
