"""Benchmarks: `make bench` prints one table of counts and ratios, each row with its target.

Each module here named ``bench_*.py`` exposes ``rows() -> list[Row]``; ``python -m bench`` runs
them all (or those named on the command line) and prints the table. Timing lives here, never in
a test: rows report ratios or counts so they read the same on a slow machine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    area: str
    metric: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: informational, no pass/fail target
