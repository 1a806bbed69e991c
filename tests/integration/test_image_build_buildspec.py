"""The CodeBuild buildspec's commands, run under /bin/sh the way CodeBuild runs them, with fake
``docker`` and ``aws`` executables on PATH that record their arguments.

CodeBuild semantics reproduced: the phases run in order, each command in the shell, and the first
command exiting non-zero fails the build (``on-failure: ABORT`` skips the remaining phases).
"""

from __future__ import annotations

import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from constructs.docker_image_buildspec import build_spec_object, commands_in_order

pytestmark = pytest.mark.integration

REPOSITORY_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/image-repo"
TAG = "0123456789abcdef0123456789abcdef"
DIGEST = "sha256:" + "d" * 64

# Each fake appends one line per call: the program name and its arguments, tab-separated.
# FAKE_FAIL names a "<program> <subcommand>" that exits 1.
FAKE = r"""#!/bin/sh
name=$(basename "$0")
line="$name"
for arg in "$@"; do line="$line	$arg"; done
printf '%s\n' "$line" >> "$CALL_LOG"
case "$name $1 $2" in
  "aws ecr get-login-password") printf 'fake-password\n' ;;
  "aws ecr describe-images")
    # The tag exists once pushed (or when the test says it was pushed before).
    if [ -f "$CALL_LOG.pushed" ] || [ -n "$FAKE_EXISTING" ]; then printf '%s\n' "$FAKE_DIGEST"
    else echo "ImageNotFoundException" >&2; exit 254; fi ;;
  "aws lambda update-function-code") printf 'InProgress\n' ;;
esac
if [ "$name" = docker ] && [ "$1" = login ]; then cat > "$CALL_LOG.password"; fi
case "$name $1 $2" in "docker push "*":$IMAGE_TAG") touch "$CALL_LOG.pushed" ;; esac
sub="$1"
if [ "$name" = docker ] && [ "$1" = buildx ]; then sub="$2"; fi
if [ "$name $sub" = "$FAKE_FAIL" ]; then echo "$name $sub failed" >&2; exit 1; fi
if [ "$name $1 $2" = "$FAKE_FAIL" ]; then echo "$name $1 $2 failed" >&2; exit 1; fi
exit 0
"""


@dataclass
class Run:
    returncode: int
    failed_command: int | None
    calls: list[list[str]]
    password: str

    def programs(self) -> list[str]:
        return [" ".join(call[:3]) if call[0] == "aws" else " ".join(call[:2]) for call in self.calls]


def run_buildspec(
    tmp_path: Path,
    *,
    update_function: str,
    fail: str = "",
    build_args: dict[str, str] | None = None,
    existing: bool = False,
) -> Run:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "aws"):
        fake = bin_dir / name
        fake.write_text(FAKE)
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    workdir = tmp_path / "src"  # CODEBUILD_SRC_DIR: the unzipped build context
    workdir.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "CALL_LOG": str(log),
        "FAKE_FAIL": fail,
        "FAKE_DIGEST": DIGEST,
        "FAKE_EXISTING": "1" if existing else "",
        "TMPDIR": str(tmp_path),
        "AWS_DEFAULT_REGION": "us-east-1",
        "REPOSITORY_URI": REPOSITORY_URI,
        "REPOSITORY_NAME": "image-repo",
        "PLATFORM": "linux/arm64",
        "DOCKERFILE": "lambdas/process_receipt/Dockerfile",
        "CACHE_TAG": "buildcache",
        "FUNCTION_NAME": "fn",
        "IMAGE_TAG": TAG,
        "UPDATE_FUNCTION": update_function,
    }
    returncode, failed = 0, None
    for index, command in enumerate(commands_in_order(build_spec_object(build_args or {}))):
        done = subprocess.run(
            ["/bin/sh", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            returncode, failed = done.returncode, index
            break
    calls = [line.split("\t") for line in log.read_text().splitlines()]
    password_file = Path(f"{log}.password")
    password = password_file.read_text().strip() if password_file.exists() else ""
    return Run(returncode, failed, calls, password)


def test_async_build_logs_in_builds_pushes_then_updates_the_function_and_waits(tmp_path: Path) -> None:
    run = run_buildspec(tmp_path, update_function="true", build_args={"PYTHON_VERSION": "3.13", "A": "x y"})
    assert run.returncode == 0
    # The two sides of the login pipe run concurrently: their order in the log is not defined.
    assert set(run.programs()[:2]) == {"aws ecr get-login-password", "docker login"}
    assert run.programs()[2:] == [
        "aws ecr describe-images",  # not in ECR yet: build it
        "docker buildx",
        "docker push",
        "docker push",
        "aws ecr describe-images",
        "aws lambda wait",
        "aws lambda update-function-code",
        "aws lambda wait",
    ]
    login = next(call for call in run.calls if call[:2] == ["docker", "login"])
    build, push_image, push_cache = run.calls[3:6]
    assert login == ["docker", "login", "--username", "AWS", "--password-stdin", REPOSITORY_URI.split("/")[0]]
    assert run.password == "fake-password"
    assert build[:3] == ["docker", "buildx", "build"]
    assert build[build.index("--platform") + 1] == "linux/arm64"
    assert "--provenance=false" in build
    assert build[build.index("--cache-from") + 1] == f"type=registry,ref={REPOSITORY_URI}:buildcache"
    assert build[build.index("--cache-to") + 1] == "type=inline"
    assert build[build.index("--file") + 1] == "lambdas/process_receipt/Dockerfile"
    assert [build[i + 1] for i, a in enumerate(build) if a == "--tag"] == [
        f"{REPOSITORY_URI}:{TAG}",
        f"{REPOSITORY_URI}:buildcache",
    ]
    assert [build[i + 1] for i, a in enumerate(build) if a == "--build-arg"] == ["A=x y", "PYTHON_VERSION=3.13"]
    assert build[-1] == "."
    assert push_image == ["docker", "push", f"{REPOSITORY_URI}:{TAG}"]
    assert push_cache == ["docker", "push", f"{REPOSITORY_URI}:buildcache"]
    describe, _, update, wait = run.calls[6:]
    assert describe[describe.index("--image-ids") + 1] == f"imageTag={TAG}"
    assert update[update.index("--function-name") + 1] == "fn"
    assert update[update.index("--image-uri") + 1] == f"{REPOSITORY_URI}@{DIGEST}"
    assert wait[:3] == ["aws", "lambda", "wait"] and wait[3] == "function-updated-v2"
    assert wait[wait.index("--function-name") + 1] == "fn"


def test_a_rerun_for_a_tag_already_in_ecr_only_updates_the_function(tmp_path: Path) -> None:
    run = run_buildspec(tmp_path, update_function="true", existing=True)
    assert run.returncode == 0
    assert not any(call[0] == "docker" and call[1] in ("buildx", "push") for call in run.calls)
    assert run.programs()[-3:] == ["aws lambda wait", "aws lambda update-function-code", "aws lambda wait"]


def test_wait_mode_build_leaves_the_function_alone(tmp_path: Path) -> None:
    run = run_buildspec(tmp_path, update_function="false")
    assert run.returncode == 0
    assert run.programs()[-2:] == ["docker push", "docker push"]
    assert not any(call[:2] == ["aws", "lambda"] for call in run.calls)


@pytest.mark.parametrize(
    ("fail", "last_program"),
    [
        ("docker login", "docker login"),
        ("docker build", "docker buildx"),
        ("docker push", "docker push"),
        ("aws lambda update-function-code", "aws lambda update-function-code"),
        ("aws ecr describe-images", "aws ecr describe-images"),
    ],
)
def test_a_failing_step_fails_the_build_and_nothing_runs_after_it(tmp_path: Path, fail: str, last_program: str) -> None:
    run = run_buildspec(tmp_path, update_function="true", fail=fail)
    assert run.returncode != 0
    if fail == "docker login":
        assert sorted(run.programs()) == ["aws ecr get-login-password", "docker login"]
    else:
        assert run.programs()[-1] == last_program
    if fail in ("docker build", "docker push"):
        assert not any(call[:2] == ["aws", "lambda"] for call in run.calls)
    if fail == "docker build":
        assert "docker push" not in run.programs()


def test_a_failing_wait_fails_the_build(tmp_path: Path) -> None:
    # The first wait (for an update CloudFormation may still be applying) fails: nothing is updated.
    run = run_buildspec(tmp_path, update_function="true", fail="aws lambda wait")
    assert run.returncode != 0
    assert run.programs()[-1] == "aws lambda wait"
    assert "aws lambda update-function-code" not in run.programs()


def test_a_missing_image_tag_fails_before_anything_runs(tmp_path: Path) -> None:
    spec = build_spec_object({})
    first = commands_in_order(spec)[0]
    done = subprocess.run(["/bin/sh", "-c", first], env={"PATH": "/usr/bin:/bin", "IMAGE_TAG": ""}, check=False)
    assert done.returncode != 0
