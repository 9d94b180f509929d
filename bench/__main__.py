"""``python -m bench <command> [options]``: one entry point for every benchmark script.

Each command runs one module's ``main`` with the options that follow it (``python -m bench run --help`` shows that
module's own options). Adding a script is adding its module and one line to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Command:
    """A subcommand: the ``bench`` module whose ``main()`` it runs, options put before the user's, one-line help."""

    module: str
    help: str
    preset: tuple[str, ...] = field(default=())


COMMANDS = {
    "run": Command("quality", "the quality benchmark (both stages, few-shot, seeds): resumable, sharded; "
                   "--from-config bench/results/RUN/config.json resumes a recorded run"),
    "report": Command("report", "docs/benchmarks*.md and docs/figures/ from bench/results/ (--all, --check, --list)"),
    "speed": Command("speed", "training-step time and memory vs a single adapter, one subprocess per configuration"),
    "steps": Command("speed", "the headline step-time and bytes-for-backward ratios, round-robin in one process",
                     ("--steps-round-robin",)),
    "latency": Command("speed", "forward latency vs the bare encoder and a single adapter, round-robin",
                       ("--latency-only",)),
    "decoder-speed": Command("decoder_speed", "transfer-step cost over decoder LoRAs (random Llama), round-robin"),
    "loop": Command("loop", "the training loop's throughput against a plain PEFT + PyTorch loop"),
    "peer": Command("peer_adapters", "the `adapters` library's AdapterFusion step cost (run from the peer venv)"),
    "peer-score": Command("peer_score", "the `adapters` library's AdapterFusion scored on a run's own sources"),
    "sparsity": Command("sparsity", "transfer --sparsity λ, then prune --keep K: ω's concentration and the score"),
    "curve-device": Command("curve_device", "the cost-over-N curve on a lent GPU, fp32 and bf16, in one call "
                            "(--dry-run: offline, on the CPU)"),
    "e2e": Command("e2e", "end to end, as a user runs it: transfer over 256 plain-PEFT LoRAs vs train-source"),
    "e2e-phases": Command("e2e_phases", "e2e's worker: one scalearn command (its arguments follow) with its time "
                          "split by phase into $E2E_PHASES"),
    "speed-curve": Command("speed_curve", "the cost over a shelf: step, bytes saved for backward and inference at "
                           "N = 1, 16, 64, 256, and resolving 256 sources"),
    "small-targets": Command("small_targets", "small targets: model-selection rules for ScaLearn on a few hundred "
                             "rows, against the average and the own adapter"),
    "multilabel": Command("multilabel", "a multi-label target (go_emotions, macro-F1) over the strong run's sources: "
                          "own adapter, average, ScaLearn++, AdapterFusion, few-shot"),
    "selection-cost": Command("selection_cost", "transfer --select K: the selection run's cost against one "
                              "ScaLearn epoch over all N candidates, N = 35 and 256"),
    "lora-sweep": Command("lora_sweep", "the LoRA defaults: lr × target modules (then rank), chosen on dev"),
    "merge-rows": Command("merge_rows", "merge rows computed on another machine into a run's results.jsonl"),
    "device": Command("device", "compute a run's missing rows on a GPU machine (and pack what that machine needs)"),
    "shelf": Command("shelf", "the shelf benchmark: narrow vs broad shelf, every method, selections of K sources "
                     "(`run --from-config bench/results/shelf/config.json` runs it too)"),
}


def parser() -> argparse.ArgumentParser:
    """The top-level parser: it only lists the commands (each module parses its own options)."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        module = f"bench/{command.module}.py" + (f" {' '.join(command.preset)}" if command.preset else "")
        sub.add_parser(name, help=f"{command.help} [{module}]", add_help=False)
    return p


def harness(argv: list[str]) -> str | None:
    """The ``harness`` a ``--from-config`` file records (the shelf run's), or None."""
    import json
    from pathlib import Path

    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--from-config" and i + 1 < len(argv) else arg.partition("=")[2] \
            if arg.startswith("--from-config=") else None
        if value and Path(value).is_file():
            return json.loads(Path(value).read_text()).get("harness")
    return None


def main(argv: list[str] | None = None) -> None:
    """Run ``argv[0]``'s module with the rest of ``argv`` as its command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        parser().parse_args(argv[:1])  # prints the command list (--help) or a usage error naming the choices
        return
    command = COMMANDS[argv[0]]
    if argv[0] == "run" and harness(argv[1:]) == "shelf":  # a recorded run names its harness
        command = COMMANDS["shelf"]
    module = importlib.import_module(f"bench.{command.module}")
    # the module parses sys.argv itself (some mains take no argv); its usage line names this command
    sys.argv = [f"python -m bench {argv[0]}", *command.preset, *argv[1:]]
    module.main()


if __name__ == "__main__":
    main()
