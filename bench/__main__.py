"""python -m bench [module ...]: run the benchmark modules and print one table."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import traceback
from pathlib import Path

from bench import Row

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _modules(selected: list[str]) -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    if selected:
        unknown = [s for s in selected if f"bench_{s}" not in names and s not in names]
        if unknown:
            raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}")
        names = [n for n in names if n in selected or n.removeprefix("bench_") in selected]
    return names


def main(argv: list[str]) -> int:
    rows: list[Row] = []
    failed = False
    for name in _modules(argv):
        print(f"... running {name}", file=sys.stderr, flush=True)
        try:
            rows.extend(importlib.import_module(f"bench.{name}").rows())
        except Exception:  # a broken benchmark is reported, the others still run
            traceback.print_exc()
            rows.append(Row(name.removeprefix("bench_"), "benchmark crashed", "error", ok=False))
            failed = True
    headers = ("area", "metric", "value", "target", "ok")
    table = [(r.area, r.metric, r.value, r.target, "" if r.ok is None else ("yes" if r.ok else "NO")) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
