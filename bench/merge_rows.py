"""Merge result rows computed on another machine (a GPU, a colleague's box) into a run's ``results.jsonl``.

The other machine runs the same plan (``python -m bench run`` with the same options, on a copy of this tree) and returns
the rows it appended. Each row records its ``device`` (``quality_runner.run_device``). A row whose run this file
already records is not added: the first recorded row stays the run's row (the tables read one row per run), and the
newcomer goes to ``device_repeats.jsonl`` beside it, where the report sets the two scores side by side — what the
machine alone changes.

    python -m bench merge-rows new_rows.jsonl [--out bench/results/strong]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.quality_plan import Results, row_key

REPO = Path(__file__).resolve().parents[1]


def merge(new: list[dict], out: Path) -> tuple[int, int]:
    """Append the rows of runs ``out/results.jsonl`` lacks; the others to ``out/device_repeats.jsonl``.
    Returns (added, repeated). Rows without a ``device`` are refused: a merged row must say where it ran."""
    unlabelled = [row_key(r) for r in new if not r.get("device")]
    if unlabelled:
        raise SystemExit(f"{len(unlabelled)} row(s) do not record their device (first: {unlabelled[0]}): produce "
                         "them with this tree's `python -m bench run`, which records it")
    if not (out / "results.jsonl").is_file():
        raise SystemExit(f"{out / 'results.jsonl'} not found: pass --out the run folder the rows belong to")
    results, repeats = Results(out / "results.jsonl"), Results(out / "device_repeats.jsonl")
    added = 0
    for row in new:
        if results.has(**row):
            repeats.add(row)
        else:
            results.add(row)
            added += 1
    return added, len(new) - added


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", type=Path, help="a JSONL file of rows from the other machine")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "strong", help="the run folder")
    args = p.parse_args(argv)
    new = [json.loads(line) for line in args.rows.open() if line.strip()]
    added, repeated = merge(new, args.out)
    print(f"added {added} row(s) to {args.out / 'results.jsonl'}; {repeated} already recorded there "
          f"(kept beside it in device_repeats.jsonl)")


if __name__ == "__main__":
    main()
