"""cdk-nag (AwsSolutions) over the whole app: no unacknowledged finding, every acknowledgement justified.

cdk-nag 3 runs as a CDK policy-validation plugin: a finding interrupts synthesis and is written to
``validation-report.json``; acknowledgements are ``Validations.of(construct).acknowledge(...)``
records in the construct metadata (``aws:cdk:acknowledged-rules``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from cdk_nag import AwsSolutionsChecks

from app import build_app
from tests.helpers import cdk_json_context

pytestmark = pytest.mark.unit

CONTEXTS = {
    # As deployed by default: created table and Ollama secret.
    "default": {},
    # Imported table and Ollama secret, a created LangSmith secret, a pinned environment.
    "imported": {
        "table_name": "receipts-existing",
        "ollama_api_key_secret_name": "ollama/api-key",
        "langsmith_tracing": "true",
        "account": "123456789012",
        "region": "eu-west-1",
    },
}


def nag_synth(outdir: Path, context: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Synthesize with AwsSolutionsChecks; return the validation report and the acknowledgements by path."""
    merged = cdk_json_context()
    merged.update(context)
    app = cdk.App(outdir=str(outdir), context=merged)
    build_app(app)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    error = None
    try:
        app.synth()
    except RuntimeError as exc:  # raised when a plugin reports a violation; the report says which
        error = exc
    report_file = outdir / "validation-report.json"
    assert report_file.is_file(), f"no validation report (synth error: {error})"
    acknowledgements: dict[str, dict[str, str]] = {}
    for construct in app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                acknowledgements.setdefault(construct.node.path, {}).update(entry.data)
    return json.loads(report_file.read_text()), acknowledgements


@pytest.fixture(scope="module", params=sorted(CONTEXTS))
def nag_result(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return nag_synth(tmp_path_factory.mktemp(f"nag-{request.param}"), CONTEXTS[request.param])


def test_the_pack_ran(nag_result: Any) -> None:
    report, _ = nag_result
    assert [p["pluginName"] for p in report["pluginReports"]] == ["AwsSolutions"]


def test_no_unacknowledged_finding(nag_result: Any) -> None:
    report, _ = nag_result
    findings = [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    ]
    assert findings == []


def test_each_acknowledgement_names_rule_resource_and_reason(nag_result: Any) -> None:
    _, acknowledgements = nag_result
    assert acknowledgements, "expected acknowledgements (IAM5 wildcards at least)"
    for path, rules in acknowledgements.items():
        for rule, reason in rules.items():
            # "<pack>::<pack>-<rule>[<finding>]": a cdk-nag pack's rule (AwsSolutions here; Serverless
            # acknowledgements from tests/security_synth.py follow the same form).
            assert re.match(r"^(AwsSolutions|Serverless)::\1-[A-Za-z0-9]+(\[.+\])?$", rule), (path, rule)
            if "-IAM5" in rule:
                # One finding per acknowledgement: never the whole rule for a construct.
                assert "[Resource::" in rule or "[Action::" in rule, (path, rule)
            assert len(reason) >= 80, (path, rule, reason)  # a reason, not a placeholder


def test_our_acknowledgements(nag_result: Any) -> None:
    """The findings this project acknowledges in its own constructs, and nothing broader."""
    _, acknowledgements = nag_result
    ours = {
        path.split("/", 1)[1]: sorted(
            rule.split("::", 1)[1].split("[")[0] for rule in rules if rule.startswith("AwsSolutions::")
        )
        for path, rules in acknowledgements.items()
        # CodeBuildDockerImage acknowledges its own
        if "/ProcessReceiptImage" not in path and "/ValidateReceiptImage" not in path
    }
    ours = {path: rules for path, rules in ours.items() if rules}
    for state_machine in ("CreateLabels", "ValidateLabels"):  # one acknowledgement table for both
        assert ours.pop(f"{state_machine}/ManifestBucket") == ["AwsSolutions-S1"]
        assert ours.pop(f"{state_machine}/ListReceiptsRole") == ["AwsSolutions-IAM5"]
        assert ours.pop(f"{state_machine}/ListReceiptsFunction") == ["AwsSolutions-L1"]
        assert ours.pop(f"{state_machine}/StateMachine") == ["AwsSolutions-IAM5"] * 7
    for secret in ("OllamaApiKey", "LangSmithApiKey"):
        if secret in ours:
            assert ours.pop(secret) == ["AwsSolutions-SMG4"]
    assert ours == {}
