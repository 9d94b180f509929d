"""Source adapter kinds: ``lora`` (PEFT) and ``bottleneck`` (the paper's Pfeiffer adapter)."""

from typing import Literal

AdapterKind = Literal["lora", "bottleneck"]
ADAPTER_KINDS: tuple[str, ...] = ("lora", "bottleneck")
