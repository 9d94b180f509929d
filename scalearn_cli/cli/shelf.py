"""``scalearn select``, and the shelf and selection options ``transfer`` shares with it (one help text each)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from scalearn_cli.cli.common import (
    BatchOpt, DataDirOpt, DataFileOpt, EndpointOpt, FewShotOpt, JsonOpt, LabelFieldOpt, MaxDevOpt, MaxLenOpt,
    MaxTrainOpt, ModelOpt, OverwriteOpt, ProblemOpt, RegistryOpt, SeedOpt, TaskOpt, TextFieldsOpt, console,
    print_json, resolver, split_csv,
)
from scalearn_cli.errors import ArtifactError, UsageError

SourcesOpt = Annotated[Optional[list[str]], typer.Option(
    "--source", "-s", help="A source: scalearn, PEFT LoRA or AdapterHub folder, a pulled path, org/name[@rev] or "
                           "hf://org/name[@rev]; repeat.")]
ShelfOpt = Annotated[Optional[list[str]], typer.Option(
    "--shelf", help="Every source of a registry (local, local:/dir, a registry folder, hub, a Hub URL), of the zoo "
                    "(zoo: every built zoo source) or of a folder of adapter folders that fits the base model; repeat.")]
FamilyOpt = Annotated[Optional[str], typer.Option(
    "--shelf-family", help="Keep shelf sources of these task families (comma-separated; see `scalearn tasks`).")]
KindOpt = Annotated[Optional[str], typer.Option(
    "--shelf-kind", help="Keep shelf sources of these adapter kinds (comma-separated: lora, bottleneck).")]
IncludeOpt = Annotated[Optional[list[str]], typer.Option(
    "--shelf-include", help="Keep shelf sources whose id (repo id or folder name) matches this glob; repeat.")]
ExcludeOpt = Annotated[Optional[list[str]], typer.Option(
    "--shelf-exclude", help="Drop shelf sources whose id matches this glob; repeat.")]
SelectOpt = Annotated[Optional[int], typer.Option(
    "--select", help="Compose only the K sources a short ScaLearnUniform run with a group lasso ranks first.")]
SelectStepsOpt = Annotated[Optional[int], typer.Option(
    "--select-steps", help="Selection run: training steps (default: one epoch; 30 on a small split).")]
SelectEpochsOpt = Annotated[Optional[int], typer.Option("--select-epochs", help="Selection run: epochs instead.")]
SelectSparsityOpt = Annotated[Optional[float], typer.Option(
    "--select-sparsity", help="Selection run: group-lasso strength λ on each source's ω (default 0.003).")]


def shelf_filter(family: str | None, kind: str | None, include: list[str] | None, exclude: list[str] | None):
    """The library's :class:`~scalearn_cli.shelf.ShelfFilter` from the CLI's options."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.shelf import ShelfFilter

    return ShelfFilter(split_csv(family), split_csv(kind), tuple(include or ()), tuple(exclude or ()))


def select_options(k: int | None, steps: int | None, epochs: int | None, sparsity: float | None,
                   lr: float | None = None):
    """The library's :class:`~scalearn_cli.selection.SelectOptions`, or None without ``k``."""
    if k is None:
        if steps is not None or epochs is not None:
            raise UsageError("--select-steps and --select-epochs set the budget of --select K; pass --select")
        return None
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.selection import SelectOptions
    from scalearn_cli.selection import DEFAULT_SPARSITY

    return SelectOptions(k, steps, epochs, DEFAULT_SPARSITY if sparsity is None else sparsity, lr)


def select(
    task: TaskOpt,
    keep: Annotated[int, typer.Option("--keep", "-k", help="How many sources to choose.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Save the choice as JSON here.")] = None,
    source: SourcesOpt = None,
    shelf: ShelfOpt = None,
    shelf_family: FamilyOpt = None,
    shelf_kind: KindOpt = None,
    shelf_include: IncludeOpt = None,
    shelf_exclude: ExcludeOpt = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Training steps of the run that ranks the sources "
                                                                 "(default: one epoch; 30 on a small split).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Its epochs instead.")] = None,
    sparsity: Annotated[Optional[float], typer.Option("--sparsity", help="Its group-lasso strength λ (default 0.003).")
                        ] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Its learning rate (default: ScaLearn's 6e-3).")] = None,
    data_dir: DataDirOpt = None,
    data_file: DataFileOpt = None,
    text_fields: TextFieldsOpt = None,
    label_field: LabelFieldOpt = "label",
    problem_type: ProblemOpt = "classification",
    max_train_samples: MaxTrainOpt = None,
    few_shot: FewShotOpt = None,
    max_dev_samples: MaxDevOpt = None,
    batch_size: BatchOpt = 32,
    max_length: MaxLenOpt = 128,
    seed: SeedOpt = 42,
    model: ModelOpt = None,
    registry: RegistryOpt = None,
    endpoint: EndpointOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Choose K sources for a target by the learned criterion of `transfer --select`; print (and save) the choice."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.selection import choose
    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.stages.transfer import TransferOptions
    from scalearn_cli.train import TrainConfig

    if out is not None and out.exists() and not overwrite:
        raise ArtifactError(f"{out} exists; pass --overwrite to replace it or choose another --out")
    data = DataOptions(task=task, data_dir=data_dir, data_file=data_file, text_fields=split_csv(text_fields),
                       label_field=label_field, problem_type=problem_type, max_train_samples=max_train_samples,
                       few_shot=few_shot, max_dev_samples=max_dev_samples)
    options = TransferOptions(sources=tuple(source or ()), data=data, out=Path("."), model=model,
                              train=TrainConfig(batch_size=batch_size, max_length=max_length, seed=seed),
                              resolver=resolver(registry, endpoint))
    result = choose(options, tuple(shelf or ()), shelf_filter(shelf_family, shelf_kind, shelf_include, shelf_exclude),
                    select_options(keep, steps, epochs, sparsity, lr))
    if out is not None:
        # lazy: keeps torch out of `scalearn --help`
        from scalearn_cli.artifacts import write_json

        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
    if as_json:
        print_json(result)
        return
    _print_choice(result["selection"], out)


def _print_choice(record: dict[str, Any], out: Path | None) -> None:
    from rich.table import Table

    table = Table(title=f"chose {record['k']} of {record['n_candidates']} sources", title_justify="left")
    for name in ("rank", "source", "task", "share"):
        table.add_column(name, justify="right" if name in ("rank", "share") else "left")
    for score in sorted(record["scores"], key=lambda s: s["rank"]):
        if score["chosen"]:
            table.add_row(str(score["rank"]), score["pinned"], str(score["task"]), f"{100 * score['share']:.1f}%")
    console.print(table)
    console.print(f"criterion: {record['criterion']}; λ {record['sparsity']:g}, {record['steps']} steps, "
                  f"{record['seconds']:.1f} s")
    if out is not None:
        console.print(f"saved to [bold]{out}[/]; compose them with transfer -s for each source above")
