"""The tail every benchmark shares: the machine it ran on, with the load average before and after
(this host is shared, and a result taken under load is to be replaced), and the JSON file written
whole, its folder made if need be."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine(load_before: tuple[float, float, float] | list[float], **extra: Any) -> dict[str, Any]:
    """``cpus``, ``python``, whatever the benchmark adds (torch's version, its threads), and the
    load average before the run (taken by the caller at its start) and now."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), **extra,
            "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())}


def write_result(path: str | Path, result: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out
