"""checkov over the synthesized app (cdk.out), from its own venv (.venv-checkov, made by ``make install``
from requirements-checkov.txt: checkov pins boto3 and others to versions that conflict with .venv).

- With the repository's .checkov.yaml: no failed check, no parsing error.
- Without its skips: every finding is one the skip reasons in .checkov.yaml were written for (check
  id, resource type and construct path below), and every skip is still needed (no stale skip).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
import yaml

from tests.helpers import REPO_ROOT
from tests.security_synth import NagSynth

pytestmark = pytest.mark.integration

CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
CONFIG = REPO_ROOT / ".checkov.yaml"

#: The two labeling state machines and their worker images (the same constructs, configured twice).
_MACHINES = r"(CreateLabels|ValidateLabels)"
_IMAGES = r"(CreateLabels/ProcessReceiptImage|ValidateLabels/ValidateReceiptImage)"
#: check id -> (resource type, construct path pattern) pairs the .checkov.yaml reason covers.
REVIEWED: dict[str, list[tuple[str, str]]] = {
    "CKV_AWS_18": [
        ("AWS::S3::Bucket", rf".*/{_MACHINES}/ManifestBucket/Resource"),
        ("AWS::S3::Bucket", rf".*/{_IMAGES}/ArtifactBucket/Resource"),
    ],
    "CKV_AWS_21": [("AWS::S3::Bucket", rf".*/{_MACHINES}/ManifestBucket/Resource")],
    "CKV_AWS_149": [("AWS::SecretsManager::Secret", r".*/(OllamaApiKey|LangSmithApiKey)/Resource")],
    "CKV_AWS_158": [("AWS::Logs::LogGroup", rf".*/{_MACHINES}/.*")],
    "CKV_AWS_116": [("AWS::Lambda::Function", rf".*/{_MACHINES}/.*")],
    "CKV_AWS_117": [("AWS::Lambda::Function", rf".*/{_MACHINES}/.*")],
    "CKV_AWS_115": [("AWS::Lambda::Function", rf".*/{_MACHINES}/.*")],
    "CKV_AWS_173": [("AWS::Lambda::Function", rf".*/{_MACHINES}/.*")],
    "CKV_AWS_136": [("AWS::ECR::Repository", rf".*/{_IMAGES}/Repository/Resource")],
    "CKV_AWS_51": [("AWS::ECR::Repository", rf".*/{_IMAGES}/Repository/Resource")],
    "CKV_AWS_111": [
        ("AWS::IAM::Policy", rf".*/{_IMAGES}/TriggerProvider/waiter-state-machine/Role/DefaultPolicy/Resource")
    ],
    "CKV_AWS_107": [("AWS::IAM::Policy", rf".*/{_IMAGES}/BuildRole/DefaultPolicy/Resource")],
}


def run_checkov(outdir: Path, *extra: str) -> dict[str, Any]:
    assert CHECKOV.exists(), "checkov's venv is missing: run `make install` (it builds .venv-checkov)"
    completed = subprocess.run(
        [str(CHECKOV), "-d", str(outdir), "--framework", "cloudformation", "--skip-download", "-o", "json", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=outdir,  # checkov reads a .checkov.yaml from its working directory: only the one passed counts
        env={"PATH": "/usr/bin:/bin", "HOME": str(outdir), "BC_SKIP_MAPPING": "TRUE"},
    )
    assert completed.returncode in (0, 1), completed.stderr[-3000:]  # 1: failed checks (asserted below)
    data = json.loads(completed.stdout)
    reports = data if isinstance(data, list) else [data]
    (report,) = [r for r in reports if r.get("check_type") == "cloudformation"]
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] > 30  # the templates were read
    result: dict[str, Any] = report
    return result


@pytest.fixture(scope="module")
def construct_paths(nag_synth: NagSynth) -> dict[str, str]:
    """Logical id -> construct path of every resource of the stack."""
    stack = nag_synth.stack
    return {
        stack.resolve(c.logical_id): c.node.path
        for c in stack.node.find_all()
        if isinstance(c, cdk.CfnResource) and cdk.Stack.of(c) is stack
    }


def test_checkov_with_the_repository_configuration_reports_no_failed_check(nag_synth: NagSynth) -> None:
    report = run_checkov(nag_synth.outdir, "--config-file", str(CONFIG))
    failed = [(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100


def test_every_finding_without_the_skips_is_one_the_skip_reasons_cover(
    nag_synth: NagSynth, construct_paths: dict[str, str]
) -> None:
    skipped = yaml.safe_load(CONFIG.read_text())["skip-check"]
    assert sorted(skipped) == sorted(REVIEWED)
    report = run_checkov(nag_synth.outdir)
    unreviewed, used = [], set()
    for finding in report["results"]["failed_checks"]:
        kind, logical_id = finding["resource"].split(".", 1)
        path = construct_paths.get(logical_id, logical_id)
        covered = any(
            kind == want_kind and re.fullmatch(pattern, path)
            for want_kind, pattern in REVIEWED.get(finding["check_id"], [])
        )
        if covered:
            used.add(finding["check_id"])
        else:
            unreviewed.append(f"{finding['check_id']} {finding['check_name']}: {kind} {path}")
    assert unreviewed == []
    assert used == set(REVIEWED), f"stale skips in .checkov.yaml: {sorted(set(REVIEWED) - used)}"


def test_every_skip_in_the_configuration_carries_its_reason() -> None:
    lines = CONFIG.read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.fullmatch(r"\s*- (CKV_\w+)", line)
        if match:
            comment = []
            for previous in reversed(lines[:index]):
                if not previous.strip().startswith("#"):
                    break
                comment.insert(0, previous.strip("# "))
            assert comment and comment[0].startswith(match.group(1)), f"{match.group(1)} has no reason above it"
            assert len(" ".join(comment).split()) >= 15, match.group(1)
