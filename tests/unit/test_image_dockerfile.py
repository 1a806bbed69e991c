"""The process_receipt Dockerfile: arm64 Lambda base, wheels-only cached pip, built-in frontend, minimal copies,
hadolint clean."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "lambdas" / "process_receipt" / "Dockerfile"
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"
BASE_IMAGE = re.compile(r"^public\.ecr\.aws/lambda/python:3\.12-arm64(@sha256:[0-9a-f]{64})?$")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, rest))
    return result


def test_every_stage_starts_from_the_arm64_python_312_lambda_image() -> None:
    froms = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: dependencies are installed in a stage of their own"
    assert all(BASE_IMAGE.match(image) for image in froms), froms


def test_dependencies_come_from_the_image_requirements_as_wheels_with_a_pip_cache_mount() -> None:
    runs = [rest for keyword, rest in instructions() if keyword == "RUN" and "pip install" in rest]
    assert len(runs) == 1
    words = shlex.split(runs[0])
    mounts = [w.removeprefix("--mount=") for w in words if w.startswith("--mount=type=cache,")]
    assert len(mounts) == 1
    target = dict(part.split("=", 1) for part in mounts[0].split(","))["target"]
    assert words[words.index("--cache-dir") + 1] == target, "pip must use the cache mount, whatever HOME is"
    assert "--only-binary=:all:" in words
    requirement = words[words.index("--requirement") + 1]
    copies = [rest.split() for keyword, rest in instructions() if keyword == "COPY"]
    assert ["lambdas/process_receipt/requirements.txt", requirement] in copies
    assert "requirements-dev" not in DOCKERFILE.read_text()


def test_the_builtin_frontend_builds_it_without_a_syntax_directive() -> None:
    # A "# syntax=docker/dockerfile:..." parser directive makes BuildKit pull that frontend image from
    # Docker Hub on every CodeBuild build (anonymous pull limits on shared CodeBuild addresses); the
    # built-in frontend already supports RUN --mount=type=cache.
    text = DOCKERFILE.read_text()
    assert not re.search(r"(?im)^#\s*syntax\s*=", text)
    assert any(keyword == "RUN" and "--mount=type=cache," in rest for keyword, rest in instructions())


def test_final_stage_copies_only_the_handler_and_the_two_packages_and_runs_the_handler() -> None:
    final = stages()[-1]
    sources = {rest.split()[0] for keyword, rest in final if keyword == "COPY" and not rest.startswith("--from")}
    assert sources == {"receipt_dynamo", "receipt_label", "lambdas/process_receipt/handler.py"}
    assert all(rest.split()[-1].startswith("${LAMBDA_TASK_ROOT}") for keyword, rest in final if keyword == "COPY")
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
    assert final[-1] == ("CMD", '["handler.lambda_handler"]')


def test_hadolint_passes_and_every_ignored_rule_says_why() -> None:
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore" in line:
            assert re.search(r"hadolint ignore=[\w,]+\s+\S", line), f"ignored rule without a reason: {line}"
