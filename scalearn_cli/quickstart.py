"""The quickstart workflow on the embedded defaults: zoo -> local registry -> few-shot transfer -> table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from scalearn_cli.stages.common import DataOptions

TARGET = "demo-paraphrase"


def run_quickstart(
    workdir: Path,
    epochs: int = 10,
    few_shot: int = 64,
    registry: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Build the demo sources into the registry, then compare on a few-shot target: a single adapter vs ScaLearn.

    As in the paper's few-shot setting, the target's own adapter in the composition is the few-shot one; the
    other sources are the zoo's full-data demo adapters, pulled from the registry by id and commit.
    """
    from scalearn_cli.demo_data import write_demo_tasks
    from scalearn_cli.registry import get_registry
    from scalearn_cli.resolve import Resolver
    from scalearn_cli.stages.source import train_source
    from scalearn_cli.stages.transfer import TransferOptions, transfer
    from scalearn_cli.train import TrainConfig
    from scalearn_cli.zoo import build, load_catalog

    workdir = Path(workdir)
    data_root = workdir / "data"
    write_demo_tasks(data_root / "demo")
    log(f"demo tasks written to {data_root / 'demo'}")
    catalog = load_catalog(None)
    reg = get_registry(registry)
    recipes = [r for r in catalog.select(None) if r.data.get("source") == "demo"]
    built = build(catalog, reg, recipes, data_root, log=log)
    rows = [_row(b["task"], "zoo source", 1, None, b["metrics"]) for b in built]
    others = [f"{b['repo_id']}@{b['revision']}" for b in built if b["task"] != TARGET]
    target = DataOptions(task=TARGET, data_dir=data_root / "demo" / TARGET, few_shot=few_shot)
    log(f"few-shot target {TARGET}: training a single LoRA on {few_shot} examples")
    own = train_source(target, workdir / "sources" / f"{TARGET}-fewshot", "lora", None,
                       TrainConfig(epochs=epochs, lr=2e-3, max_length=64, patience=None), catalog.base_model,
                       overwrite=True)
    rows.append(_meta_row(own, "single LoRA", 1))
    sources = [str(workdir / "sources" / f"{TARGET}-fewshot"), *others]
    for variant in ("scalearn++", "scalearn-uniform++"):
        log(f"composing {len(sources)} sources with {variant}")
        options = TransferOptions(tuple(sources), target, workdir / "transfer" / variant, "scalearn", variant,
                                  train=TrainConfig(epochs=epochs, lr=6e-3, max_length=64, patience=None),
                                  resolver=Resolver(registry), overwrite=True)
        meta = transfer(options)
        rows.append(_meta_row(meta, variant, len(sources)))
    return rows


def _meta_row(meta: dict[str, Any], method: str, n: int) -> dict[str, Any]:
    return _row(meta["task"]["name"], method, n, meta, meta["metrics"]["test"])


def _row(task: str, method: str, n: int, meta: dict[str, Any] | None, test: dict[str, float]) -> dict:
    from scalearn_cli.tasks import get_task

    main = get_task(task).main_metric
    return {
        "task": task,
        "method": method,
        "n_sources": n,
        "train_examples": meta["training"]["train_examples"] if meta else None,
        "parameters": meta["adapter"]["parameters"] if meta else None,
        "score": float(test.get(main, float("nan"))),
        "metric": main,
    }
