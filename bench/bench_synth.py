"""app.py's early template-validator registration: app synthesis with it and without it.

Each synthesis is a fresh ``python -c`` subprocess running ``app.build_app`` + ``app.synth()`` with
cdk.json's context (what ``cdk synth`` runs, without the CLI). Without the early registration
(``app.register_template_validator`` replaced by a no-op) CDK creates the same validator lazily inside
``app.synth()``. Interleaved repetitions, medians; the rows are ratios without / with, in CPU
and in wall seconds (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable

from bench import Row, run_timed
from local_pipeline.template import REPO_ROOT

AREA = "synth"
REPETITIONS = 5
#: The early registration keeps its lines while it saves at least this share of the synth time.
WORTH_IT_RATIO = 1.05

_SYNTH = """
import json, sys, tempfile, time
sys.path.insert(0, ".")
import aws_cdk as cdk
import app as entry
if sys.argv[1] == "lazy":
    entry.register_template_validator = lambda _app: None
t0 = time.perf_counter()
app = cdk.App(outdir=tempfile.mkdtemp(), context=json.load(open("cdk.json"))["context"])
entry.build_app(app)
t1 = time.perf_counter()
app.synth()
t2 = time.perf_counter()
print(json.dumps({"build": t1 - t0, "synth": t2 - t1}))
"""


def _synth_once(variant: str) -> tuple[float, float, dict[str, float]]:
    """Wall and CPU seconds of one subprocess (imports and its Node process included), its build / synth phases."""
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    env.pop("CDK_VALIDATION", None)
    done, seconds, cpu = run_timed([sys.executable, "-c", _SYNTH, variant], cwd=REPO_ROOT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"synth ({variant}) failed:\n{done.stderr[-3000:]}")
    return seconds, cpu, json.loads(done.stdout.strip().splitlines()[-1])


def rows() -> list[Row]:
    runs: dict[str, list[tuple[float, float, dict[str, float]]]] = {"early": [], "lazy": []}
    for _ in range(REPETITIONS):  # interleaved, so machine load hits both alike
        for variant, results in runs.items():
            results.append(_synth_once(variant))

    def median(variant: str, pick: Callable[[tuple[float, float, dict[str, float]]], float]) -> float:
        return statistics.median(pick(run) for run in runs[variant])

    def summary(variant: str) -> str:
        wall, cpu = median(variant, lambda r: r[0]), median(variant, lambda r: r[1])
        build, synth = median(variant, lambda r: r[2]["build"]), median(variant, lambda r: r[2]["synth"])
        return f"{wall:.1f} s (build {build:.1f} s + synth {synth:.1f} s; CPU {cpu:.1f} s)"

    wall_ratio = median("lazy", lambda r: r[0]) / median("early", lambda r: r[0])
    cpu_ratio = median("lazy", lambda r: r[1]) / median("early", lambda r: r[1])
    metric = f"app synthesis (fresh python -c, median of {REPETITIONS}), validator created lazily / registered early"
    return [
        Row(
            AREA,
            f"{metric}, CPU seconds (robust to machine load)",
            f"{cpu_ratio:.2f}x",
            f">= {WORTH_IT_RATIO}x keeps app.py's register_template_validator",
            cpu_ratio >= WORTH_IT_RATIO,
        ),
        Row(AREA, f"{metric}, wall seconds: {summary('lazy')} / {summary('early')}", f"{wall_ratio:.2f}x"),
    ]
