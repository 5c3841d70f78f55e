"""The scenarios. Each module has `run(opts, shared) -> Result`; `opts` is the parsed command line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Shared:
    """Figures one scenario measures and a later one in the same run reuses."""

    warm_max_rps: float | None = None
    warm_max_concurrency: int | None = None
