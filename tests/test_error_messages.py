"""The error table: each failure is one line naming the input and what to do, with untrusted text escaped, torch's
advice and ANSI codes removed, and usage errors exiting 2. Offline, CPU, the tiny BERT of conftest.py."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TRAIN, invoke, make_source, one_error_line, peft_lora
from safetensors.torch import save_file

from scalearn_cli.cli.main import _escape_record, render_error
from scalearn_cli.errors import ArtifactError, printable

ESC = "\x1b"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rte")
    rows = [{"sentence1": "good movie w1", "sentence2": "the plot", "label": i % 2} for i in range(24)]
    for split in ("train", "validation", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def transfer(data_dir: Path, out: Path, *sources: Path) -> Any:
    args = [a for s in sources for a in ("-s", s)]
    return invoke("transfer", "--task", "rte", "--data-dir", data_dir, *args, *TRAIN, "--out", out)


# ---- errors that used to be tracebacks or bare exception names ------------------------------------------------
def test_an_invalid_rank_pattern_regex_names_the_key(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    folder = peft_lora(tmp_path / "peft", tiny_model_dir, seed=0, target_modules=["query", "value"])
    config = json.loads((folder / "adapter_config.json").read_text())
    config["rank_pattern"] = {"query[": 4}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    one_error_line(transfer(data_dir, tmp_path / "T", folder), 1, "rank_pattern", "query[",
                   "not a valid regular expression", alone=False)


def test_a_registry_root_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "registry").write_text("not a folder")
    monkeypatch.setenv("SCALEARN_REGISTRY", str(tmp_path / "registry"))
    one_error_line(invoke("list"), 1, "SCALEARN_REGISTRY", "is a file", alone=False)
    one_error_line(invoke("pull", "org/x"), 1, "SCALEARN_REGISTRY", alone=False)


def test_a_huge_seed_is_a_usage_error(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    result = invoke("train-source", "--task", "rte", "--data-dir", data_dir, "--model", tiny_model_dir, *TRAIN,
                    "--seed", str(10**20), "--out", tmp_path / "S")
    one_error_line(result, 2, "--seed", "4294967295", alone=False)


def test_pull_into_a_symlink_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    registry = f"local:{tmp_path / 'reg'}"
    assert invoke("push", make_source(tmp_path / "s", tiny_model_dir), "org/s", "--registry", registry).exit_code == 0
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    one_error_line(invoke("pull", "org/s", "--local-dir", tmp_path / "link", "--registry", registry), 1,
                   "symbolic link", alone=False)
    assert list((tmp_path / "real").iterdir()) == []


def test_export_to_the_parent_of_the_working_directory(tiny_model_dir: Path, data_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sources = [make_source(tmp_path / f"s{i}", tiny_model_dir, seed=i) for i in range(2)]
    assert transfer(data_dir, tmp_path / "C", *sources).exit_code == 0
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    one_error_line(invoke("export", tmp_path / "C", "--out", ".."), 1, "working directory", alone=False)
    one_error_line(invoke("export", tmp_path / "C", "--out", "..", "--overwrite"), 1, "working directory", alone=False)


# ---- untrusted text is escaped; torch's advice never shown ----------------------------------------------------
def test_escape_codes_in_weight_names_are_printed_escaped(tiny_model_dir: Path, data_dir: Path,
                                                          tmp_path: Path) -> None:
    folder = peft_lora(tmp_path / "peft", tiny_model_dir, seed=0, target_modules=["query"])
    evil = "base_model.model.encoder.\x1b]0;pwned\x07\x1b[2J.weight"
    save_file({evil: torch.zeros(2, 2)}, str(folder / "adapter_model.safetensors"))
    line = one_error_line(transfer(data_dir, tmp_path / "T", folder), 1, "neither a LoRA weight", alone=False)
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in line


def test_a_pickle_refusal_shows_what_was_refused_not_torchs_advice(tiny_model_dir: Path, data_dir: Path,
                                                                   tmp_path: Path) -> None:
    folder = peft_lora(tmp_path / "peft", tiny_model_dir, seed=0, target_modules=["query"])
    (folder / "adapter_model.safetensors").unlink()

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned > " + str(tmp_path / "ran"),))

    torch.save({"x": Payload()}, folder / "adapter_model.bin")
    line = one_error_line(transfer(data_dir, tmp_path / "T", folder), 1, "not a plain tensor file", "GLOBAL",
                          "convert it to safetensors", alone=False)
    assert "weights_only" not in line and "trusted source" not in line
    assert not (tmp_path / "ran").exists()


def test_the_renderer_escapes_control_characters_and_strips_ansi() -> None:
    code, line = render_error(ArtifactError("weight '\x1b]0;title\x07' in \u202eevil\n"))  # type: ignore[misc]
    assert code == 1 and line == "weight '\\x1b]0;title\\x07' in \\u202eevil\\n"
    code, line = render_error(RuntimeError("\x1b[1mboom\x1b[0m: bad\nsecond line"))  # type: ignore[misc]
    assert line == "RuntimeError: boom: bad (set SCALEARN_DEBUG=1 for the traceback)"
    assert printable("tab\there") == "tab\\there"


def test_os_errors_name_the_path_and_what_to_do() -> None:
    code, line = render_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/x/reg/models"))  # type: ignore
    assert code == 1 and line.startswith("/x/reg/models: Not a directory") and "check the path" in line
    code, line = render_error(OSError(errno.EBUSY, "Device or resource busy", "/x"))  # type: ignore[misc]
    assert "/x" in line and "choose another path" in line
    code, line = render_error(OverflowError("Python int too large to convert to C long"))  # type: ignore[misc]
    assert code == 2 and "smaller value" in line


def test_log_lines_are_escaped_too() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s: note on %s", ("dir", "\x1b[2Jname"), None)
    assert _escape_record(record) and record.getMessage() == "dir: note on \\x1b[2Jname"


# ---- usage errors exit 2, as docs/cli.md says -------------------------------------------------------------------
def test_usage_errors_exit_2(tiny_model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    one_error_line(transfer(data_dir, tmp_path / "T"), 2, "--source", alone=False)
    result = invoke("train-source", "--task", "no-such-task", "--model", tiny_model_dir, "--out", tmp_path / "S")
    one_error_line(result, 2, "unknown task", alone=False)


def test_list_prints_others_metadata_as_escaped_text(tiny_model_dir: Path, tmp_path: Path) -> None:
    registry = f"local:{tmp_path / 'reg'}"
    source = make_source(tmp_path / "s", tiny_model_dir, task="\x1b[2J")
    assert invoke("push", source, "org/s", "--registry", registry).exit_code == 0
    listed = invoke("list", "--registry", registry)
    assert listed.exit_code == 0 and ESC not in listed.stdout
    assert "\\x1b" in listed.stdout  # the cell may be cut to the terminal's width, never printed raw
