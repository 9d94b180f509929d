"""What every part of bench/report.py shares: where the results live, the methods (their order and labels), the
paper's column names, and how numbers are formatted and result files read."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# every method in the order the tables list them: (method, ScaLearn variant)
METHODS = [("single", None), ("average", None), ("adaptersoup", None), ("peft-all-active", None),
           ("adapterfusion", None), ("adapterfusion-tuned", None),
           ("scalearn", "scalearn"), ("scalearn", "scalearn-uniform"), ("scalearn", "scalearn++"),
           ("scalearn", "scalearn-uniform++"),
           ("merge", "linear"), ("merge", "cat"), ("merge", "svd"), ("merge", "ties"), ("merge", "dare_ties"),
           ("arrow", None)]
FEW_SHOT_METHODS = [("single", None)] + [m for m in METHODS if m[0] == "scalearn"]  # the target's own, then ScaLearn
LABEL = {"single": "Single adapter (target's own)", "average": "Average (ω = 1/N, fixed)",
         "adaptersoup": "AdapterSoup (top-k similar sources, weight-averaged)",
         "peft-all-active": "PEFT, all N LoRAs active as separate branches, trained (peer)",
         "adapterfusion": "AdapterFusion", "adapterfusion-tuned": "AdapterFusion (tuned lr)",
         "merged": "ScaLearn folded into the base weights (export --format merged)",
         "scalearn": "ScaLearn", "scalearn-uniform": "ScaLearnUniform", "scalearn++": "ScaLearn++",
         "scalearn-uniform++": "ScaLearnUniform++",
         "merge-linear": "PEFT merge, linear (add_weighted_adapter, head only)",
         "merge-cat": "PEFT merge, cat (head only)", "merge-svd": "PEFT merge, svd (head only)",
         "merge-ties": "PEFT merge, TIES (head only)", "merge-dare_ties": "PEFT merge, DARE-TIES (head only)",
         "arrow": "PEFT Arrow routing (top-k per token, head only)"}
PAPER_COL = {"mnli": "MNLI", "qqp": "QQP", "qnli": "QNLI", "sst2": "SST-2", "stsb": "STS-B", "mrpc": "MRPC",
             "rte": "RTE", "cola": "CoLA"}


def label(method: str, variant: str | None) -> str:
    return LABEL.get(f"{method}-{variant}") or LABEL[variant or method]


def fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


def read_jsonl(path: Path) -> list[dict]:
    """Every row of a JSON-lines file (results.jsonl and its kin), blank lines skipped; [] when there is no file."""
    if not path.is_file():
        return []
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_run(run: Path) -> tuple[list[dict], dict]:
    """A run folder's result rows (results.jsonl) and its config.json ({} when it has none)."""
    return read_jsonl(run / "results.jsonl"), read_json(run / "config.json") or {}


def epochs_done(row: dict, batch_size: int) -> int | None:
    """Epochs a run trained before it stopped (steps per epoch from the train size and batch size)."""
    per_epoch = math.ceil(row["train_examples"] / batch_size) if row.get("train_examples") else 0
    return round(row["steps"] / per_epoch) if per_epoch and row.get("steps") else None


def epochs_run(row: dict, batch_size: int) -> str:
    """'best of run' epochs, e.g. '3 of 6'."""
    run = epochs_done(row, batch_size)
    return f"{row['best_epoch']} of {run}" if run else str(row.get("best_epoch", "–"))
