"""Integration test snapshots: synthesize each ``tests/integ/integ_*.py`` app and compare with its committed snapshot.

A snapshot is the app's synthesized templates and ``integ.json`` in ``tests/integ/<app>.snapshot/``
(integ-runner's layout). ``make test`` compares them offline, so a change to what an integ stack
deploys fails until its snapshot is refreshed on purpose::

    python -m tests.integ.snapshots --update     # after a successful `make integ`: make integ-update
    python -m tests.integ.snapshots --check      # what the test does
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.helpers import REPO_ROOT

INTEG_DIR = Path(__file__).resolve().parent
SNAPSHOT_FILES = ("*.template.json", "integ.json")
#: integ-tests-alpha stamps each assertion with the synthesis time (``salt``) so that it runs on every
#: deploy; it is the only value that changes between two syntheses of the same tree.
SALT_PLACEHOLDER = "<synthesis time>"


def integ_apps() -> list[Path]:
    return sorted(INTEG_DIR.glob("integ_*.py"))


def snapshot_dir(app: Path) -> Path:
    return app.with_name(app.name + ".snapshot")


def synthesize(app: Path, outdir: Path) -> dict[str, Any]:
    """Run the app (as ``cdk synth`` would: ``python <app>`` with ``CDK_OUTDIR``) and read its snapshot files."""
    env = {**os.environ, "CDK_OUTDIR": str(outdir), "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    result = subprocess.run(
        [sys.executable, str(app)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{app.name} failed to synthesize:\n{result.stderr[-4000:]}")
    return {name: _without_salt(content) for name, content in read_snapshot(outdir).items()}


def _without_salt(content: Any) -> Any:
    for resource in (content.get("Resources") or {}).values() if isinstance(content, dict) else ():
        properties = resource.get("Properties") or {}
        if str(resource.get("Type", "")).startswith("Custom::DeployAssert@") and "salt" in properties:
            properties["salt"] = SALT_PLACEHOLDER
    return content


def read_snapshot(directory: Path) -> dict[str, Any]:
    files: dict[str, Any] = {}
    for pattern in SNAPSHOT_FILES:
        for path in sorted(directory.glob(pattern)):
            files[path.name] = json.loads(path.read_text())
    return files


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What changed between two snapshots: files added or removed, and each differing JSON path."""
    found = [f"{name}: not in the new synthesis" for name in sorted(set(expected) - set(actual))]
    found += [f"{name}: new file" for name in sorted(set(actual) - set(expected))]
    for name in sorted(set(expected) & set(actual)):
        found += [f"{name}: {path}" for path in _diff(expected[name], actual[name], "")]
    return found


def _diff(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = [f"{path}/{k}: removed" for k in sorted(set(old) - set(new))]
        out += [f"{path}/{k}: added" for k in sorted(set(new) - set(old))]
        for key in sorted(set(old) & set(new)):
            out += _diff(old[key], new[key], f"{path}/{key}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (a, b) in enumerate(zip(old, new, strict=True)) for line in _diff(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {json.dumps(old)[:120]} -> {json.dumps(new)[:120]}"]


def write_snapshot(app: Path, files: dict[str, Any]) -> None:
    target = snapshot_dir(app)
    target.mkdir(exist_ok=True)
    for stale in target.glob("*.json"):
        stale.unlink()
    for name, content in files.items():
        (target / name).write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integ.snapshots", description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the committed snapshots")
    args = parser.parse_args(argv)
    failed = 0
    for app in integ_apps():
        with tempfile.TemporaryDirectory(prefix="integ-") as outdir:
            files = synthesize(app, Path(outdir))
        if args.update:
            write_snapshot(app, files)
            print(f"{app.name}: snapshot written ({len(files)} files)")
            continue
        changes = differences(read_snapshot(snapshot_dir(app)), files)
        failed += bool(changes)
        print(f"{app.name}: {'CHANGED' if changes else 'unchanged'}")
        for change in changes[:40]:
            print(f"  {change}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
