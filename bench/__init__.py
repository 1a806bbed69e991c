"""Benchmarks: `make bench` prints one table of counts and ratios, each row with its target.

Each module here named ``bench_*.py`` exposes ``rows() -> list[Row]``; ``python -m bench`` runs
them all (or those named on the command line) and prints the table. Timing lives here, never in
a test: rows report ratios or counts so they read the same on a slow machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    area: str
    metric: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: informational, no pass/fail target


Timed = tuple[subprocess.CompletedProcess[str], float, float]


def run_timed(command: list[str], *, cwd: Path, env: dict[str, str]) -> Timed:
    """Run ``command`` (captured, text, 10 min at most); its result, wall seconds and its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def use_fake_aws_credentials() -> None:
    """Only moto's stand-in credentials and region in this process (no profile, no real key reaches a fake)."""
    for variable in [v for v in os.environ if v.startswith("AWS_")]:
        del os.environ[variable]
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    )
