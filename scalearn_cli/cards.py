"""Model cards (``README.md`` with Hugging Face YAML metadata) for sources and compositions."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_model_card(folder: Path, meta: dict[str, Any], title: str, body: str) -> None:
    """Render ``meta`` (a scalearn.json dict) into the folder's ``README.md`` via huggingface_hub's card API."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    task = meta["task"]
    adapter_kind = meta.get("adapter", {}).get("kind", "")
    problem = {"multiple_choice": "multiple-choice", "multi_label_classification": "multi-label"}.get(
        task["problem_type"], "text-classification")
    results = [
        EvalResult(
            task_type=problem,
            dataset_type=task.get("hub_id") or "local",
            dataset_name=f"{task['name']}",
            dataset_config=task.get("hub_config"),
            dataset_split=task.get("test_split", "validation"),
            metric_type=name,
            metric_value=round(float(value), 4),
        )
        for name, value in meta.get("metrics", {}).get("test", {}).items()
    ]
    data = ModelCardData(
        library_name="peft" if adapter_kind == "lora" and meta["kind"] == "source" else "scalearn",
        base_model=meta["base_model"]["id"],
        tags=["scalearn", meta["kind"], adapter_kind, task["name"], *([problem] if problem == "multi-label" else [])],
        datasets=[task["hub_id"]] if task.get("hub_id") else None,
        model_name=title,
        eval_results=results or None,
    )
    content = f"---\n{data.to_yaml()}\n---\n\n# {title}\n\n{body}\n"
    ModelCard(content).save(str(Path(folder) / "README.md"))


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """A markdown table of split -> metric -> value."""
    names = sorted({name for values in metrics.values() for name in values})
    lines = ["| split | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for split, values in metrics.items():
        lines.append(f"| {split} | " + " | ".join(f"{values.get(n, float('nan')):.2f}" for n in names) + " |")
    return "\n".join(lines)
