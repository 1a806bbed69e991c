"""make diff without AWS (local_pipeline.review_diff), make demo, make local-table and receipt_dynamo load's
region/credentials message."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from local_pipeline import review_diff
from local_pipeline.template import LocalStack
from tests.helpers import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "receipt_grocery.json"
NO_CREDENTIALS_LINE = (
    "No AWS credentials: comparing the working tree with {base} (synthesized locally); "
    "with credentials make diff compares with the deployed stack."
)


def bare_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without any AWS setting, config or credentials file (and no instance metadata)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "HOME": str(tmp_path),
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    env.update(extra)
    return env


def state_machine_id(template: dict[str, Any]) -> str:
    """The logical id of the CreateLabels state machine (the one whose Map runs ProcessReceipt)."""
    return LocalStack(template).state_machine("create")


# -- the readable state machine diff ---------------------------------------------------------------------


def tiny_template(max_attempts: int) -> dict[str, Any]:
    definition = {
        "StartAt": "Work",
        "States": {
            "Work": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": max_attempts}],
                "End": True,
            }
        },
    }
    text = json.dumps(definition)
    head, tail = text.split('"arn:aws:states:::lambda:invoke"')
    parts = [head + '"', {"Fn::GetAtt": ["Fn", "Arn"]}, '"' + tail]
    return {
        "Resources": {
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {"DefinitionString": {"Fn::Join": ["", parts]}},
            }
        }
    }


@pytest.mark.unit
def test_definition_diff_renders_references_and_shows_the_changed_line() -> None:
    text = review_diff.definition_diffs(tiny_template(3), tiny_template(5), "main")
    rendered = review_diff.definition_of(tiny_template(3)["Resources"]["Machine"])
    assert rendered["States"]["Work"]["Resource"] == "${Fn.Arn}"
    assert '-          "MaxAttempts": 3' in text
    assert '+          "MaxAttempts": 5' in text
    assert text.startswith("--- main: Machine\n+++ working tree: Machine\n")


@pytest.mark.unit
def test_unchanged_definition_says_so() -> None:
    assert review_diff.definition_diffs(tiny_template(3), tiny_template(3), "main") == (
        "State machine Machine: definition unchanged\n"
    )


@pytest.mark.unit
def test_no_credentials_found_without_any_aws_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in bare_environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in [k for k in os.environ if k.startswith("AWS_") and k not in bare_environment(tmp_path)]:
        monkeypatch.delenv(name)
    started = time.perf_counter()
    assert review_diff.have_credentials() is False
    assert time.perf_counter() - started < 5


@pytest.mark.unit
def test_deploy_check_without_credentials_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert review_diff.main(["--require-credentials"], credentials=False) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "AWS_PROFILE" in lines[0] and "aws configure" in lines[0] and "aws sso login" in lines[0]


@pytest.mark.integration
def test_review_diff_against_a_template_file_shows_the_changed_retry(synthesized: Any, tmp_path: Path) -> None:
    template = dict(synthesized.get_stack_by_name("ReceiptLabeling-dev").template)
    machine = state_machine_id(template)
    base = copy.deepcopy(template)
    parts = base["Resources"][machine]["Properties"]["DefinitionString"]["Fn::Join"][1]
    changed = False
    for index, part in enumerate(parts):
        if isinstance(part, str) and re.search(r'"MaxAttempts":\d+', part):
            parts[index] = re.sub(r'"MaxAttempts":\d+', '"MaxAttempts":97', part, count=1)
            changed = True
            break
    assert changed, "the definition has no Retry MaxAttempts"
    base_file = tmp_path / "base.template.json"
    base_file.write_text(json.dumps(base))

    out = io.StringIO()
    assert review_diff.main(["--template", str(base_file)], out=out, credentials=False) == 0
    text = out.getvalue()
    assert text.splitlines()[0] == NO_CREDENTIALS_LINE.format(base=base_file)
    assert "cdk diff --template" in text
    assert re.search(r'^-\s+"MaxAttempts": 97,?$', text, re.MULTILINE), text[-3000:]
    assert re.search(r'^\+\s+"MaxAttempts": \d+,?$', text, re.MULTILINE)
    assert f"--- {base_file}: {machine}" in text


@pytest.mark.integration
def test_review_diff_with_a_missing_template_exits_2(tmp_path: Path) -> None:
    assert review_diff.main(["--template", str(tmp_path / "nope.json")], out=io.StringIO(), credentials=False) == 2


# -- make demo ----------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_demo_labels_then_judges_the_fixtures_with_the_stand_in_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local_pipeline.demo"],
        cwd=tmp_path,
        env=bare_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "DEMO: the labels and their judgements come from a scripted stand-in model, not an LLM"
    assert "Execution SUCCEEDED: 8 succeeded, 0 failed of 8" in result.stdout
    assert "Validation execution SUCCEEDED: 8 succeeded, 0 failed of 8" in result.stdout
    (total,) = [line.split() for line in lines if line.startswith("total ") and len(line.split()) == 7]
    judged, valid, invalid, needs_review, skipped, calls = map(int, total[1:])
    assert judged == valid + invalid + needs_review > 0 and min(valid, invalid, needs_review) > 0
    assert (skipped, calls) == (0, 8)  # one judging call per receipt
    rows = [line for line in lines if re.match(r"^  \[\d+:\d+\] \S+ -> ", line)]
    assert rows
    assert not [row for row in rows if "(PENDING)" in row]  # every label was judged
    assert any(re.fullmatch(r"  \[\d+:\d+\] [A-Za-z]{3,} -> PRODUCT_NAME \(VALID\)", row) for row in rows)
    assert any(re.fullmatch(r"  \[\d+:\d+\] \S*\d\.\d\d -> LINE_TOTAL \(VALID\)", row) for row in rows)
    assert any(re.fullmatch(r"  \[\d+:\d+\] (TOTAL|TAX|SUBTOTAL) -> PRODUCT_NAME \(INVALID\)", row) for row in rows)


# -- receipt_dynamo load without region or credentials ------------------------------------------------------


def load_error_line(tmp_path: Path, **environment: str) -> str:
    """``python -m receipt_dynamo load`` of a fixture in a bare environment: it exits 2 with one stderr line."""
    result = subprocess.run(
        [sys.executable, "-m", "receipt_dynamo", "load", str(FIXTURE), "--table", "receipts"],
        cwd=tmp_path,
        env=bare_environment(tmp_path, **environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.integration
def test_load_without_region_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    line = load_error_line(tmp_path)
    assert "AWS_DEFAULT_REGION" in line and "--region" in line and "make local-table" in line


@pytest.mark.integration
def test_load_without_credentials_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    line = load_error_line(tmp_path, AWS_DEFAULT_REGION="us-east-1")
    assert "AWS_PROFILE" in line and "make local-table" in line


# -- make local-table -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_local_table_works_verbatim_for_receipt_dynamo_load(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "local_pipeline.local_table", "--table", "receipts"],
        cwd=REPO_ROOT,
        env=bare_environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        export = None
        deadline = time.monotonic() + 60
        while export is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            if line.startswith("export "):
                export = line
        assert export is not None, server.stderr.read() if server.poll() is not None else "no export line"
        variables = dict(pair.split("=", 1) for pair in export.split()[1:])
        assert set(variables) == {
            "AWS_ENDPOINT_URL_DYNAMODB",
            "AWS_DEFAULT_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        }
        assert variables["AWS_ENDPOINT_URL_DYNAMODB"].startswith("http://127.0.0.1:")

        loaded = subprocess.run(
            [sys.executable, "-m", "receipt_dynamo", "load", str(FIXTURE), "--table", "receipts"],
            cwd=tmp_path,
            env=bare_environment(tmp_path, **variables),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert loaded.returncode == 0, loaded.stderr
        assert "loaded 1 receipt(s)" in loaded.stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0
