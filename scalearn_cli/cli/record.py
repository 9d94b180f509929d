"""``scalearn record``: re-save the integrity record of a folder written before scalearn kept one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scalearn_cli.cli.common import JsonOpt, console, print_json


def record(
    folder: Annotated[Path, typer.Argument(help="A scalearn folder whose scalearn.json has no record yet.")],
    as_json: JsonOpt = False,
) -> None:
    """Record the sha256 of a folder's files and card (only if it has no record: an edited one is refused)."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.artifacts.folders import record_folder

    data = record_folder(folder)
    if as_json:
        print_json({"folder": str(folder), "files": data["files"], "content_hash": data["content_hash"]})
    else:
        console.print(f"recorded {len(data['files'])} files of {folder}: any later edit is refused", highlight=False,
                      markup=False)
