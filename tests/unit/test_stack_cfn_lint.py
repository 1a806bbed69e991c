"""cfn-lint over every CloudFormation template of the synthesized cloud assembly: no error, no warning.

The repository's .cfnlintrc.yaml applies (the checks it ignores say why there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CFN_LINT_CONFIG, cfn_lint, synth_app

pytestmark = pytest.mark.unit

# The stack is environment-agnostic: check it against two commercial regions.
REGIONS = ["us-east-1", "eu-west-1"]


def templates_of(assembly_dir: Path) -> list[Path]:
    manifest = json.loads((assembly_dir / "manifest.json").read_text())
    files = [
        assembly_dir / artifact["properties"]["templateFile"]
        for artifact in manifest["artifacts"].values()
        if artifact["type"] == "aws:cloudformation:stack"
    ]
    assert files, "the cloud assembly holds no CloudFormation stack"
    return sorted(files)


def test_assembly_lists_every_template_file(synthesized: Any) -> None:
    directory = Path(synthesized.directory)
    on_disk = sorted(directory.glob("*.template.json"))
    assert templates_of(directory) == on_disk


@pytest.fixture(scope="module")
def other_options(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The other branches of the stack: imported table and key, created LangSmith key, waiting build."""
    outdir = tmp_path_factory.mktemp("cdk.out-options")
    synth_app(
        outdir,
        table_name="receipts-existing",
        ollama_api_key_secret_name="ollama/api-key",
        langsmith_tracing="true",
        wait_for_build="true",
        account="123456789012",
        region="eu-west-1",
    )
    return outdir


def lint_assembly(assembly_dir: Path) -> list[str]:
    findings = []
    for path in templates_of(assembly_dir):
        findings += [f"{path.name}: {finding}" for finding in cfn_lint(path.read_text(), REGIONS)]
    return findings


def test_the_configuration_ignores_only_w3005() -> None:
    """W3005 (a DependsOn that a Ref/GetAtt repeats) is CDK's own and harmless; nothing else is ignored."""
    from cfnlint.config import ConfigMixIn

    config = ConfigMixIn([], regions=REGIONS, config_file=str(CFN_LINT_CONFIG))
    assert config.ignore_checks == ["W3005"]


def test_cfn_lint_reports_nothing(synthesized: Any) -> None:
    assert lint_assembly(Path(synthesized.directory)) == []


def test_cfn_lint_reports_nothing_for_the_other_options(other_options: Path) -> None:
    assert lint_assembly(other_options) == []
