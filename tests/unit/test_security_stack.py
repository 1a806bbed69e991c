"""Security checks over the synthesized app (cdk.json context), run by ``make test``.

- cdk-nag: the AwsSolutions and Serverless packs report no unacknowledged finding, and every
  acknowledgement names one rule (IAM5: one finding) and says why.
- No secret-looking value in the templates, the Lambda / CodeBuild environments or cdk.json;
  the LLM keys are only referenced (Secrets Manager ARNs), and a new secret's template holds a
  generation rule, never a value.
- No IAM statement grants a wildcard action (no "*" anywhere in an action: not "*", "<service>:*"
  nor a partial one such as "s3:GetObject*"), uses NotAction, or attaches a managed policy; no
  cdk-nag acknowledgement excuses a wildcard action (IAM5 acknowledgements name wildcard
  resources only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from tests.helpers import REPO_ROOT
from tests.security_synth import NagSynth

pytestmark = pytest.mark.unit

PACKS = ("AwsSolutions", "Serverless")

# ---- cdk-nag --------------------------------------------------------------------------------------


def test_cdk_nag_aws_solutions_and_serverless_packs_have_no_unacknowledged_finding(nag_synth: NagSynth) -> None:
    plugins = {p["pluginName"]: p for p in nag_synth.report["pluginReports"]}
    assert set(PACKS) <= set(plugins)
    for pack in PACKS:
        findings = [
            (v["ruleName"], [c["constructPath"] for c in v["violatingConstructs"]]) for v in plugins[pack]["violations"]
        ]
        assert findings == [], f"{pack}: {json.dumps(findings, indent=1)[:4000]}"
        assert plugins[pack]["conclusion"] == "success"
    assert nag_synth.error is None


def acknowledgements(nag_synth: NagSynth) -> dict[str, str]:
    found: dict[str, str] = {}
    for construct in nag_synth.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                found.update({f"{construct.node.path} {rule}": reason for rule, reason in entry.data.items()})
    return found


def test_every_acknowledgement_names_one_rule_of_a_pack_and_gives_a_reviewable_reason(nag_synth: NagSynth) -> None:
    found = acknowledgements(nag_synth)
    assert any(" Serverless::" in k for k in found) and any(" AwsSolutions::" in k for k in found)
    for where, reason in found.items():
        _path, rule = where.split(" ", 1)
        pack, _, rule_id = rule.partition("::")
        assert pack in PACKS and rule_id.startswith(f"{pack}-"), where
        assert len(reason.split()) >= 8, f"{where}: the reason must explain the exception: {reason!r}"
        # A wildcard finding is acknowledged one finding at a time, never the whole rule.
        if rule_id.startswith("AwsSolutions-IAM5"):
            assert re.fullmatch(r"AwsSolutions-IAM5\[(Action|Resource)::.+\]", rule_id), where


# ---- secrets --------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "LangSmith key": re.compile(r"\blsv2_(pt|sk)_[0-9a-f]{20,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "bearer header": re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{12,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "password in a URL": re.compile(r"://[^/\s:@\"]+:[^/\s@\"]+@"),
}
SENSITIVE_NAME = re.compile(r"(?i)(api_?key|secret|token|password|passwd|credential|private_?key)")


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from strings(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from strings(inner, f"{path}[{index}]")


def environments(template: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(resource, variable name, value) of every Lambda and CodeBuild environment variable."""
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::Function":
            for name, value in (props.get("Environment") or {}).get("Variables", {}).items():
                yield logical_id, name, value
        if resource["Type"] == "AWS::CodeBuild::Project":
            for variable in props.get("Environment", {}).get("EnvironmentVariables", []):
                if variable.get("Type", "PLAINTEXT") == "PLAINTEXT":
                    yield logical_id, variable["Name"], variable["Value"]


def secret_findings(template: dict[str, Any]) -> list[str]:
    findings = [
        f"{path}: {kind}"
        for path, text in strings(template)
        for kind, pattern in SECRET_PATTERNS.items()
        if pattern.search(text)
    ]
    for logical_id, name, value in environments(template):
        # A sensitive-sounding variable may only point at a secret (an ARN or name), never hold one.
        if SENSITIVE_NAME.search(name) and not re.search(r"_(ARN|NAME|ID)$", name):
            findings.append(f"{logical_id}: environment variable {name} looks like it holds a secret")
        if SENSITIVE_NAME.search(name) and isinstance(value, str) and not value.startswith("arn:"):
            findings.append(f"{logical_id}: environment variable {name} has a literal value")
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::SecretsManager::Secret" and "SecretString" in resource.get("Properties", {}):
            findings.append(f"{logical_id}: a secret value in the template")
    return findings


def test_the_scanner_finds_planted_secrets() -> None:
    planted = {
        "Resources": {
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Environment": {
                        "Variables": {
                            "OLLAMA_API_KEY": "olk-123",
                            "X": "AKIAABCDEFGHIJKLMNOP",
                            "Y": "Bearer abcdef123456",
                        }
                    }
                },
            },
            "S": {"Type": "AWS::SecretsManager::Secret", "Properties": {"SecretString": "hunter2"}},
        }
    }
    found = secret_findings(planted)
    assert len(found) == 5, found


def test_no_secret_looking_value_in_templates_environments_or_cdk_json(nag_synth: NagSynth) -> None:
    templates = sorted(nag_synth.outdir.glob("*.template.json"))
    assert templates
    for path in templates:
        assert secret_findings(json.loads(path.read_text())) == [], path.name
    assert secret_findings({"Resources": {}, "cdk.json": json.loads((REPO_ROOT / "cdk.json").read_text())}) == []


def test_the_llm_keys_are_referenced_by_arn_only(nag_synth: NagSynth) -> None:
    env = {name: value for _, name, value in environments(nag_synth.template)}
    assert "OLLAMA_API_KEY" not in env and "LANGSMITH_API_KEY" not in env
    assert isinstance(env["OLLAMA_API_KEY_SECRET_ARN"], dict)  # a Ref to the secret, resolved at deploy time
    # at least one secret, and every one generated (never a value)
    Template.from_json(nag_synth.template).all_resources_properties(
        "AWS::SecretsManager::Secret", {"GenerateSecretString": Match.any_value()}
    )


# ---- IAM ----------------------------------------------------------------------------------------


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(props["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            documents += [p["PolicyDocument"] for p in props.get("Policies", [])]
        for document in documents:
            for statement in document["Statement"]:
                yield logical_id, statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_iam_statement_grants_a_wildcard_action(nag_synth: NagSynth) -> None:
    template = nag_synth.template
    found = list(statements(template))
    assert len(found) > 10
    for logical_id, statement in found:
        assert "NotAction" not in statement and "NotResource" not in statement, logical_id
        actions = as_list(statement.get("Action", []))
        assert actions, logical_id
        for action in actions:
            assert isinstance(action, str) and "*" not in action, f"{logical_id}: {action}"
    Template.from_json(template).all_resources_properties("AWS::IAM::Role", {"ManagedPolicyArns": Match.absent()})
    # ... and none is excused: every IAM5 acknowledgement is for a wildcard resource.
    acknowledged = [k.split(" ", 1)[1] for k in acknowledgements(nag_synth)]
    assert any(rule.startswith("AwsSolutions::AwsSolutions-IAM5[Resource::") for rule in acknowledged)
    assert [rule for rule in acknowledged if "IAM5[Action::" in rule] == []
