"""Which process this is and how training is launched: the rank from the launcher's environment, the refusal of a
launch that would silently run one process, the ``Accelerator``, and writes made by the main process only."""

from __future__ import annotations

import os
from typing import Callable, Literal

import torch

from scalearn_cli.errors import UsageError

Precision = Literal["no", "fp16", "bf16"]

#: where launchers put a process's global rank (torchrun/accelerate, Open MPI, MVAPICH, Intel MPI)
RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK")


def is_main_process() -> bool:
    """Whether this is the main (rank 0) process; read from the launcher's environment, before any Accelerator."""
    return next((int(os.environ[v]) for v in RANK_VARS if os.environ.get(v, "").isdigit()), 0) == 0


def check_launch() -> None:
    """Refuse ``accelerate launch --cpu --num_processes N`` without mpirun: accelerate then starts ONE process.

    That launcher sets ``MASTER_ADDR`` for N > 1 but no rank, so training would silently run once, with a global
    batch N times smaller than asked for.
    """
    from accelerate.utils import str_to_bool

    cpu_launch = str_to_bool(os.environ.get("ACCELERATE_USE_CPU", "false") or "false")
    if cpu_launch and os.environ.get("MASTER_ADDR") and not any(v in os.environ for v in (*RANK_VARS, "WORLD_SIZE")):
        raise UsageError(
            "accelerate launch --cpu started one process (several CPU processes need mpirun): on a machine without "
            "a GPU use 'accelerate launch --multi_gpu --num_processes N -m scalearn_cli ...' (gloo) or "
            "'torchrun --nproc_per_node N -m scalearn_cli ...'"
        )


def make_accelerator(precision: Precision = "no"):
    """An ``Accelerator`` (CPU when no GPU is present; mixed precision only where a GPU supports it)."""
    from accelerate import Accelerator

    check_launch()
    use_gpu = torch.cuda.is_available()
    return Accelerator(mixed_precision=precision if use_gpu else "no", cpu=not use_gpu)


def on_main_process(write: Callable[[], None]) -> None:
    """Run ``write`` on the main process only (under ``accelerate launch``), then let every process continue."""
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        write()
    state.wait_for_everyone()
