"""The integ test apps (tests/integ/integ_*.py) synthesize to their committed snapshots, offline.

A change to what an integ stack deploys fails here until the snapshot is refreshed on purpose
(`make integ-update` after a real run, or `python -m tests.integ.snapshots --update`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cfn_lint, resources_of_type
from tests.integ import snapshots

pytestmark = pytest.mark.integration

APPS = snapshots.integ_apps()


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return {app.name: snapshots.synthesize(app, tmp_path_factory.mktemp(app.stem)) for app in APPS}


def test_there_is_an_integ_app_for_the_image_construct_and_for_the_whole_pipeline() -> None:
    assert [app.name for app in APPS] == ["integ_image_build.py", "integ_pipeline.py"]


@pytest.mark.parametrize("app", APPS, ids=[app.stem for app in APPS])
def test_each_integ_app_synthesizes_to_its_committed_snapshot(app: Path, synthesized: dict[str, Any]) -> None:
    committed = snapshots.read_snapshot(snapshots.snapshot_dir(app))
    assert committed, f"no snapshot for {app.name}: run python -m tests.integ.snapshots --update"
    assert snapshots.differences(committed, synthesized[app.name]) == []


def test_a_deliberate_change_to_an_integ_stack_fails_the_snapshot_check(synthesized: dict[str, Any]) -> None:
    """The stand-in's memory size changed by hand in the synthesized pipeline: the check names what changed."""
    app = next(a for a in APPS if a.name == "integ_pipeline.py")
    committed = snapshots.read_snapshot(snapshots.snapshot_dir(app))
    changed = copy.deepcopy(synthesized[app.name])
    template = changed["IntegPipeline.template.json"]
    function_id = next(
        logical_id
        for logical_id in resources_of_type(template, "AWS::Lambda::Function")
        if logical_id.startswith("OllamaStandIn")
    )
    template["Resources"][function_id]["Properties"]["MemorySize"] = 4096

    found = snapshots.differences(committed, changed)

    assert found == [
        f"IntegPipeline.template.json: /Resources/{function_id}/Properties/MemorySize: "
        f"{committed['IntegPipeline.template.json']['Resources'][function_id]['Properties']['MemorySize']} -> 4096"
    ]


def test_the_assertions_run_in_order_and_wait_for_the_executions(synthesized: dict[str, Any]) -> None:
    """What `make integ` asserts is in the assertion stack: three executions, each waited for, in sequence."""
    from aws_cdk.assertions import Template

    files = synthesized["integ_pipeline.py"]
    (name,) = [n for n in files if n.startswith("PipelineIntegDefaultTestDeployAssert")]
    template = Template.from_json(files[name])
    template.resource_count_is("Custom::DeployAssert@SdkCallStepFunctionsstartExecution", 3)
    template.resource_count_is("Custom::DeployAssert@SdkCallStepFunctionsdescribeExecution", 3)
    # each describeExecution is polled by a waiter state machine until the run ends (or 20 minutes pass)
    template.resource_count_is("AWS::StepFunctions::StateMachine", 3)
    # the seeding writes (25 items each), the 3 PENDING labels and the 3 reads of the stand-in's call count
    template.resource_count_is("Custom::DeployAssert@SdkCallDynamoDBgetItem", 6)


@pytest.mark.parametrize(
    ("module", "stack_name"),
    [("tests.integ.integ_image_build", "IntegImageBuild"), ("tests.integ.integ_pipeline", "IntegPipeline")],
)
def test_the_integ_stacks_have_no_unacknowledged_cdk_nag_or_cfn_lint_finding(
    module: str, stack_name: str, tmp_path: Path
) -> None:
    """The stacks under test (not integ-tests-alpha's own assertion stacks): AwsSolutions and Serverless packs,
    and cfn-lint over the template (with the repository's .cfnlintrc.yaml)."""
    import contextlib
    import importlib
    import json

    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks, ServerlessChecks

    app = cdk.App(outdir=str(tmp_path))
    importlib.import_module(module).build(app)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    with contextlib.suppress(RuntimeError):  # raised when a plugin reports a violation; the report says which
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    findings = [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
        if construct["constructPath"].startswith(f"{stack_name}/")
    ]
    assert findings == []
    template = (tmp_path / f"{stack_name}.template.json").read_text()
    assert cfn_lint(template, ["us-east-1"]) == []


def test_checkov_with_the_repository_configuration_passes_the_integ_stacks(
    synthesized: dict[str, Any], tmp_path: Path
) -> None:
    """The stacks under test only (integ-tests-alpha's assertion stacks are that module's, not ours)."""
    import json

    from tests.integration.test_security_checkov import CONFIG, run_checkov

    for name in ("integ_image_build.py", "integ_pipeline.py"):
        for file_name, template in synthesized[name].items():
            if file_name.startswith("Integ") and file_name.endswith(".template.json"):
                (tmp_path / file_name).write_text(json.dumps(template))
    report = run_checkov(tmp_path, "--config-file", str(CONFIG))
    assert [(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]] == []
