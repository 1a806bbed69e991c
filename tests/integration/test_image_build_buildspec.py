"""The CodeBuild buildspec's commands, run under /bin/sh the way CodeBuild runs them, with fake
``docker`` and ``aws`` executables on PATH that record their arguments.

CodeBuild semantics reproduced: the phases run in order, each command in the shell, and the first
command exiting non-zero fails the build (``on-failure: ABORT`` skips the remaining phases).
"""

# ruff: noqa: E501  (the fake CLI below prints AWS error messages on one line, as the CLI does)
from __future__ import annotations

import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from constructs.docker_image_buildspec import (
    FUNCTION_POLL_LIMIT,
    FUNCTION_POLL_SECONDS,
    build_spec_object,
    commands_in_order,
)

pytestmark = pytest.mark.integration

REPOSITORY_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/image-repo"
TAG = "0123456789abcdef0123456789abcdef"
DIGEST = "sha256:" + "d" * 64
BUILDKIT_IMAGE = "public.ecr.aws/example/buildkit:v0"

# Each fake appends one line per call: the program name and its arguments, tab-separated.
# FAKE_FAIL names a "<program> <subcommand>" that exits 1.
#
# The fake `aws lambda` models what Lambda documents for LastUpdateStatus: `$CALL_LOG.function` holds
# "<LastUpdateStatus>\t<LastUpdateStatusReason>"; `$CALL_LOG.inprogress` the number of reads that still
# see InProgress. update-function-code starts a new update (InProgress for FAKE_UPDATE_POLLS reads, then
# FAKE_UPDATE_RESULT). A Failed status stays until the next update. `wait function-updated-v2` behaves as
# botocore's waiter: success on Successful, a terminal failure on Failed, and it gives up after 300
# checks one second apart (modelled as 30 reads of the fake's 10-second clock). FAKE_NO_FUNCTION: the
# function does not exist (ResourceNotFoundException, exit 254 like the CLI).
FAKE = r"""#!/bin/sh
name=$(basename "$0")
line="$name"
for arg in "$@"; do line="$line	$arg"; done
printf '%s\n' "$line" >> "$CALL_LOG"
[ "$name" = sleep ] && exit 0
not_found() {
  echo "An error occurred (ResourceNotFoundException) when calling the $1 operation: Function not found: arn:aws:lambda:us-east-1:123456789012:function:$FUNCTION_NAME" >&2
  exit 254
}
read_state() {
  n=$(cat "$CALL_LOG.inprogress" 2>/dev/null || echo 0)
  if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$CALL_LOG.inprogress"; printf 'InProgress\tNone\n'
  else cat "$CALL_LOG.function"; fi
}
sub="$1"
if [ "$name" = docker ] && [ "$1" = buildx ]; then sub="$2"; fi
if [ "$name $sub" = "$FAKE_FAIL" ]; then echo "$name $sub failed" >&2; exit 1; fi
if [ "$name $1 $2" = "$FAKE_FAIL" ]; then echo "$name $1 $2 failed" >&2; exit 1; fi
case "$name $1 $2" in
  "aws ecr get-login-password") printf 'fake-password\n' ;;
  "aws ecr-public get-login-password") printf 'fake-public-password\n' ;;
  "aws ecr describe-images")
    # The tag exists once pushed (or when the test says it was pushed before).
    if [ -f "$CALL_LOG.pushed" ] || [ -n "$FAKE_EXISTING" ]; then printf '%s\n' "$FAKE_DIGEST"
    else echo "An error occurred (ImageNotFoundException) when calling the DescribeImages operation" >&2; exit 254; fi ;;
  "aws lambda get-function-configuration")
    [ -n "$FAKE_NO_FUNCTION" ] && not_found GetFunctionConfiguration
    read_state ;;
  "aws lambda update-function-code")
    [ -n "$FAKE_NO_FUNCTION" ] && not_found UpdateFunctionCode
    n=$(cat "$CALL_LOG.inprogress" 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then
      echo "An error occurred (ResourceConflictException) when calling the UpdateFunctionCode operation: The operation cannot be performed at this time. An update is in progress for resource: $FUNCTION_NAME" >&2
      exit 254
    fi
    echo "$FAKE_UPDATE_POLLS" > "$CALL_LOG.inprogress"
    printf '%s\n' "$FAKE_UPDATE_RESULT" > "$CALL_LOG.function"
    printf 'InProgress\n' ;;
  "aws lambda wait")
    [ -n "$FAKE_NO_FUNCTION" ] && not_found GetFunction
    reads=0
    while state=$(read_state); do
      reads=$((reads + 1))
      case "$state" in
        Successful*) exit 0 ;;
        Failed*) echo 'Waiter FunctionUpdatedV2 failed: Waiter encountered a terminal failure state: For expression "Configuration.LastUpdateStatus" we matched expected path: "Failed"' >&2; exit 255 ;;
      esac
      if [ "$reads" -ge 30 ]; then echo "Waiter FunctionUpdatedV2 failed: Max attempts exceeded" >&2; exit 255; fi
    done ;;
esac
if [ "$name" = docker ] && [ "$1" = login ]; then cat >> "$CALL_LOG.password"; fi
case "$name $1 $2" in "docker buildx build") touch "$CALL_LOG.pushed" ;; esac
exit 0
"""


@dataclass
class Run:
    returncode: int
    failed_command: int | None
    calls: list[list[str]]
    passwords: list[str]
    stdout: str
    stderr: str

    def programs(self) -> list[str]:
        return [" ".join(call[:3]) if call[0] == "aws" else " ".join(call[:2]) for call in self.calls]

    def lambda_calls(self) -> list[str]:
        return [" ".join(call[1:3]) for call in self.calls if call[:2] == ["aws", "lambda"]]

    def sleeps(self) -> int:
        return sum(1 for call in self.calls if call[0] == "sleep")


def run_buildspec(
    tmp_path: Path,
    *,
    update_function: str,
    fail: str = "",
    build_args: dict[str, str] | None = None,
    existing: bool = False,
    function: str | None = "Successful\tNone",
    in_progress: int = 0,
    update_polls: int = 2,
    update_result: str = "Successful\tNone",
    spec: dict[str, Any] | None = None,
) -> Run:
    """Run the buildspec's commands in order. ``function``: the function's LastUpdateStatus and reason
    before the build (None: it does not exist); ``in_progress``: reads that still see an earlier update
    InProgress; ``update_polls`` / ``update_result``: how the build's own update proceeds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "aws", "sleep"):
        fake = bin_dir / name
        fake.write_text(FAKE)
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    workdir = tmp_path / "src"  # CODEBUILD_SRC_DIR: the unzipped build context
    workdir.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    Path(f"{log}.function").write_text(f"{function or ''}\n")
    Path(f"{log}.inprogress").write_text(f"{in_progress}\n")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "CALL_LOG": str(log),
        "FAKE_FAIL": fail,
        "FAKE_DIGEST": DIGEST,
        "FAKE_EXISTING": "1" if existing else "",
        "FAKE_NO_FUNCTION": "" if function else "1",
        "FAKE_UPDATE_POLLS": str(update_polls),
        "FAKE_UPDATE_RESULT": update_result,
        "TMPDIR": str(tmp_path),
        "AWS_DEFAULT_REGION": "us-east-1",
        "REPOSITORY_URI": REPOSITORY_URI,
        "REPOSITORY_NAME": "image-repo",
        "PLATFORM": "linux/arm64",
        "DOCKERFILE": "lambdas/process_receipt/Dockerfile",
        "CACHE_TAG": "buildcache",
        "FUNCTION_NAME": "fn",
        "BUILDKIT_IMAGE": BUILDKIT_IMAGE,
        "IMAGE_TAG": TAG,
        "UPDATE_FUNCTION": update_function,
    }
    returncode, failed, stdout, stderr = 0, None, "", ""
    for index, command in enumerate(commands_in_order(spec or build_spec_object(build_args or {}))):
        done = subprocess.run(
            ["/bin/sh", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        stdout, stderr = stdout + done.stdout, stderr + done.stderr
        if done.returncode != 0:
            returncode, failed = done.returncode, index
            break
    calls = [line.split("\t") for line in log.read_text().splitlines()]
    password_file = Path(f"{log}.password")
    passwords = password_file.read_text().split() if password_file.exists() else []
    return Run(returncode, failed, calls, passwords, stdout, stderr)


def test_async_build_logs_in_builds_on_the_container_builder_pushes_then_updates_the_function(tmp_path: Path) -> None:
    run = run_buildspec(tmp_path, update_function="true", build_args={"PYTHON_VERSION": "3.13", "A": "x y"})
    assert run.returncode == 0, run.stderr
    # The two sides of each login pipe run concurrently: their order in the log is not defined.
    assert set(run.programs()[:2]) == {"aws ecr get-login-password", "docker login"}
    assert set(run.programs()[2:4]) == {"aws ecr-public get-login-password", "docker login"}
    assert run.programs()[4:9] == [
        "aws ecr describe-images",  # not in ECR yet: build it
        "docker buildx",  # create the builder
        "docker buildx",  # build and push
        "aws lambda get-function-configuration",  # the function exists
        "aws lambda get-function-configuration",  # no update in progress: go on
    ]
    logins = [call for call in run.calls if call[:2] == ["docker", "login"]]
    assert logins == [
        ["docker", "login", "--username", "AWS", "--password-stdin", REPOSITORY_URI.split("/")[0]],
        ["docker", "login", "--username", "AWS", "--password-stdin", "public.ecr.aws"],
    ]
    public = next(call for call in run.calls if call[:3] == ["aws", "ecr-public", "get-login-password"])
    assert public[public.index("--region") + 1] == "us-east-1"  # ECR Public issues tokens in us-east-1 only
    assert sorted(run.passwords) == ["fake-password", "fake-public-password"]
    create, build = (call for call in run.calls if call[:2] == ["docker", "buildx"])
    assert create[:3] == ["docker", "buildx", "create"]
    assert create[create.index("--driver") + 1] == "docker-container"
    assert create[create.index("--driver-opt") + 1] == f"image={BUILDKIT_IMAGE}"
    assert build[:3] == ["docker", "buildx", "build"]
    assert build[build.index("--builder") + 1] == create[create.index("--name") + 1]
    assert build[build.index("--platform") + 1] == "linux/arm64"
    assert "--provenance=false" in build
    assert build[build.index("--cache-from") + 1] == f"type=registry,ref={REPOSITORY_URI}:buildcache"
    cache_to = dict(option.split("=", 1) for option in build[build.index("--cache-to") + 1].split(","))
    assert cache_to == {
        "type": "registry",
        "ref": f"{REPOSITORY_URI}:buildcache",
        "mode": "max",  # every stage's layers, the pip install stage included
        "image-manifest": "true",  # the cache as an image manifest, the form ECR stores
        "oci-mediatypes": "true",
    }
    assert build[build.index("--file") + 1] == "lambdas/process_receipt/Dockerfile"
    assert [build[i + 1] for i, a in enumerate(build) if a == "--tag"] == [f"{REPOSITORY_URI}:{TAG}"]
    assert [build[i + 1] for i, a in enumerate(build) if a == "--build-arg"] == ["A=x y", "PYTHON_VERSION=3.13"]
    assert "--push" in build and "--load" not in build
    assert build[-1] == "."
    update = next(call for call in run.calls if call[:3] == ["aws", "lambda", "update-function-code"])
    assert update[update.index("--function-name") + 1] == "fn"
    assert update[update.index("--image-uri") + 1] == f"{REPOSITORY_URI}@{DIGEST}"
    # After the update: InProgress twice (two 10-second sleeps), then Successful.
    assert run.lambda_calls()[-3:] == ["lambda get-function-configuration"] * 3
    assert run.sleeps() == 2
    assert f"function fn now runs {REPOSITORY_URI}@{DIGEST}" in run.stdout


def test_a_function_whose_last_update_failed_is_updated_again_lambda_keeps_failed_until_the_next_update(
    tmp_path: Path,
) -> None:
    """Lambda: LastUpdateStatus stays Failed until the next update; botocore's function-updated-v2 waiter
    treats Failed as terminal. Waiting on it before the update made every later build fail for good."""
    run = run_buildspec(tmp_path, update_function="true", function="Failed\tThe image manifest is not supported.")
    assert run.returncode == 0, run.stderr
    assert "lambda update-function-code" in run.lambda_calls()
    assert "last update failed (Failed\tThe image manifest is not supported.); updating again" in run.stdout


def test_an_update_in_progress_is_waited_for_before_updating_lambda_rejects_concurrent_updates(
    tmp_path: Path,
) -> None:
    """Lambda answers ResourceConflictException to an update while another is InProgress."""
    run = run_buildspec(tmp_path, update_function="true", in_progress=3)
    assert run.returncode == 0, run.stderr
    calls = run.lambda_calls()
    # 3 reads see the earlier update InProgress (the first of them is the existence check), then
    # Successful: only then the update (the fake answers ResourceConflictException before).
    assert calls.index("lambda update-function-code") == 4
    assert run.sleeps() == 2 + 2


def test_a_large_image_update_longer_than_the_waiters_5_minutes_succeeds(tmp_path: Path) -> None:
    """Lambda optimizes a new image before the update succeeds; large images take longer than botocore's
    function-updated-v2 waiter (300 checks, 1 s apart)."""
    run = run_buildspec(tmp_path, update_function="true", update_polls=60)  # 10 minutes InProgress
    assert run.returncode == 0, run.stderr
    assert run.sleeps() == 60


def test_an_update_that_never_settles_fails_the_build_after_the_bound(tmp_path: Path) -> None:
    run = run_buildspec(tmp_path, update_function="true", update_polls=10_000)
    assert run.returncode != 0
    assert run.sleeps() == FUNCTION_POLL_LIMIT - 1
    assert f"update still InProgress after {FUNCTION_POLL_LIMIT * FUNCTION_POLL_SECONDS} s" in run.stderr


def test_a_failed_update_fails_the_build_with_lambdas_last_update_status_reason(tmp_path: Path) -> None:
    reason = "The image manifest, config or layer media type for the source image is not supported."
    run = run_buildspec(tmp_path, update_function="true", update_result=f"Failed\t{reason}")
    assert run.returncode != 0
    assert f"function fn: update to {REPOSITORY_URI}@{DIGEST} failed: Failed\t{reason}" in run.stderr


def test_a_function_that_does_not_exist_yet_is_left_to_cloudformation(tmp_path: Path) -> None:
    """The pipeline's own run when CloudFormation creates it (first deploy) comes before the function:
    GetFunctionConfiguration answers ResourceNotFoundException."""
    run = run_buildspec(tmp_path, update_function="true", function=None)
    assert run.returncode == 0, run.stderr
    assert run.lambda_calls() == ["lambda get-function-configuration"]
    assert "does not exist yet: CloudFormation creates it from this image" in run.stdout


def test_a_rerun_for_a_tag_already_in_ecr_only_updates_the_function(tmp_path: Path) -> None:
    run = run_buildspec(tmp_path, update_function="true", existing=True)
    assert run.returncode == 0, run.stderr
    assert not any(call[:2] == ["docker", "buildx"] for call in run.calls)
    assert "lambda update-function-code" in run.lambda_calls()


def test_wait_mode_build_leaves_the_function_alone(tmp_path: Path) -> None:
    run = run_buildspec(tmp_path, update_function="false")
    assert run.returncode == 0, run.stderr
    assert run.programs()[-1] == "docker buildx"
    assert not any(call[:2] == ["aws", "lambda"] for call in run.calls)


@pytest.mark.parametrize(
    ("fail", "last_program"),
    [
        ("docker login", "docker login"),
        ("docker build", "docker buildx"),
        ("aws lambda update-function-code", "aws lambda update-function-code"),
        ("aws lambda get-function-configuration", "aws lambda get-function-configuration"),
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
    if fail == "docker build":
        assert not any(call[:2] == ["aws", "lambda"] for call in run.calls)


def test_the_old_waiter_based_update_fails_where_the_new_one_repairs(tmp_path: Path) -> None:
    """The fake models botocore's waiter: the command it replaces (wait, update, wait) fails on a function
    whose last update failed, before updating anything."""
    old = (
        'aws lambda wait function-updated-v2 --function-name "$FUNCTION_NAME"'
        ' && aws lambda update-function-code --function-name "$FUNCTION_NAME" --image-uri "$REPOSITORY_URI@x"'
    )
    spec = {"version": "0.2", "phases": {"build": {"commands": [old]}}}
    run = run_buildspec(tmp_path, update_function="true", function="Failed\tx", spec=spec)
    assert run.returncode != 0
    assert "terminal failure state" in run.stderr
    assert "lambda update-function-code" not in run.lambda_calls()


def test_a_missing_image_tag_fails_before_anything_runs(tmp_path: Path) -> None:
    spec = build_spec_object({})
    first = commands_in_order(spec)[0]
    done = subprocess.run(["/bin/sh", "-c", first], env={"PATH": "/usr/bin:/bin", "IMAGE_TAG": ""}, check=False)
    assert done.returncode != 0


def test_a_builder_image_that_cannot_be_pulled_falls_back_to_the_default_driver_with_an_inline_cache(
    tmp_path: Path,
) -> None:
    """Docker Hub answers anonymous pulls over its limit with 'toomanyrequests': the cache is an
    optimisation, so the build goes on without the container builder."""
    run = run_buildspec(tmp_path, update_function="false", fail="docker create")
    assert run.returncode == 0, run.stderr
    assert "did not start: building on the default driver" in run.stderr
    build = next(call for call in run.calls if call[:3] == ["docker", "buildx", "build"])
    assert build[build.index("--builder") + 1] == "default"
    assert build[build.index("--cache-to") + 1] == "type=inline"
    assert f"--tag={REPOSITORY_URI}:buildcache" in build  # the inline cache travels in the cache tag's image
    assert "--push" in build


def test_an_existing_tag_skips_the_builder_and_the_build(tmp_path: Path) -> None:
    run = run_buildspec(tmp_path, update_function="false", existing=True)
    assert run.returncode == 0, run.stderr
    assert not any(call[:2] == ["docker", "buildx"] for call in run.calls)
