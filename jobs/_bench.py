"""What every benchmark report states: the machine, and where the real AVA labels are."""
from __future__ import annotations

import os
import platform
from pathlib import Path

#: The real AVA labels beside the project (``../shared/data/ava``), when present.
REAL_AVA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ava" / "AVA_dataset"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, {platform.platform()}"
