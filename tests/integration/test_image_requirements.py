"""The image's lock resolves for linux/arm64 CPython 3.12 from binary wheels alone, hash-checked.

CodeBuild builds the image unattended on arm64; a dependency without an aarch64 (or pure Python)
wheel would turn into a compiler run there, or a failed build. This asks pip, with the machine's
own index configuration, to resolve lambdas/requirements.lock (the one lock of both worker images)
exactly as the Dockerfiles install it (``--require-hashes``: every dependency must be in the lock, pinned, and
every file must match one of its sha256 hashes), and checks that it installs the lock's releases,
no more and no fewer, among them requirements.txt's pins.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.bench_image import ARM64_CP312, pip
from constructs.labeling_state_machine import IMAGE_LOCK as IMAGE_LOCK_PATH
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.integration

IMAGE_LOCK = REPO_ROOT / IMAGE_LOCK_PATH
IMAGE_REQUIREMENTS = IMAGE_LOCK.with_suffix(".txt")

WHEEL_NAME = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)


def pinned_requirements() -> dict[str, str]:
    pins = {}
    for line in IMAGE_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def locked_releases() -> dict[str, str]:
    pins = {}
    for line in IMAGE_LOCK.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name, _, version = line.removesuffix("\\").strip().partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_image_lock_resolves_for_arm64_cpython_312_from_hashed_wheels_only(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = pip(
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        str(report),
        *ARM64_CP312,
        "--require-hashes",
        "--target",
        str(tmp_path / "target"),
        "-r",
        str(IMAGE_LOCK),
    )
    assert result.returncode == 0, (
        "arm64 resolution of the lock failed (a dependency missing from the lock, a hash mismatch, or a source "
        f"build?); refresh it with `make image-lock`:\n{result.stderr}"
    )

    installs = json.loads(report.read_text())["install"]
    resolved = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"] for i in installs}
    assert resolved == locked_releases()
    assert {name: resolved.get(name) for name in pinned_requirements()} == pinned_requirements()

    for item in installs:
        filename = item["download_info"]["url"].rsplit("/", 1)[-1]
        match = WHEEL_NAME.match(filename)
        assert match, f"{item['metadata']['name']} would be built from {filename}"
        platforms = match["plat"].split(".")
        assert platforms == ["any"] or any(p.endswith("_aarch64") and p.startswith("manylinux") for p in platforms), (
            filename
        )
        python_tags = match["py"].split(".")
        assert "py3" in python_tags or "cp312" in python_tags or match["abi"] == "abi3", filename
