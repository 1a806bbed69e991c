"""app.py's context checks: unknown keys and a half-set environment stop the synthesis."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

import aws_cdk as cdk
import pytest

from app import KNOWN_CONTEXT_KEYS, build_app, check_context_keys, environment_from_context
from constructs.receipt_labeling_stack import PipelineSettings
from tests.helpers import REPO_ROOT, cdk_json_context

pytestmark = pytest.mark.unit


def app_with(**context: Any) -> cdk.App:
    """An app with cdk.json's context (its "//" comment and feature flags included) plus ``context``."""
    merged = cdk_json_context()
    merged.update(context)
    return cdk.App(context=merged)


def exit_message(app: cdk.App) -> str:
    with pytest.raises(SystemExit) as raised:
        build_app(app)
    return str(raised.value)


# ---- unknown keys -------------------------------------------------------------------------------------
def test_unknown_key_names_the_closest_known_key() -> None:
    message = exit_message(app_with(max_concurency="5"))
    assert message == "invalid context: unknown key 'max_concurency' (did you mean 'max_concurrency'?)"


def test_unknown_key_without_a_close_match_lists_the_known_keys() -> None:
    message = exit_message(app_with(colour="blue"))
    assert message.startswith("invalid context: unknown key 'colour' (known keys: account, alarm_email, ")
    assert "did you mean" not in message
    assert "\n" not in message


def test_every_unknown_key_is_named_on_one_line() -> None:
    message = exit_message(app_with(regoin="eu-west-1", stgae="prod"))
    assert message == (
        "invalid context: unknown key 'regoin' (did you mean 'region'?); unknown key 'stgae' (did you mean 'stage'?)"
    )


@pytest.mark.parametrize(
    "key",
    [
        "@aws-cdk/core:newStyleStackSynthesis",
        "@aws-cdk/aws-lambda:recognizeVersionProps",
        "aws:cdk:enable-path-metadata",
        "aws:cdk:bundling-stacks",
        "cdk-default-synthesizer",
        "assets-bucket",
        "availability-zones:account=123456789012:region=eu-west-1",
        "acknowledged-issue-numbers",
        "MaxConcurrency",
        "//",
    ],
)
def test_cdk_style_keys_are_not_flagged(key: str) -> None:
    check_context_keys(app_with(**{key: True}))


def test_cdk_json_context_as_committed_is_accepted() -> None:
    context = cdk_json_context()
    assert "//" in context
    check_context_keys(cdk.App(context=context))


def test_known_keys_are_the_settings_plus_the_environment() -> None:
    fields = {field.name for field in dataclasses.fields(PipelineSettings)}
    assert fields | {"account", "region"} == KNOWN_CONTEXT_KEYS


def test_cdk_json_comment_lists_the_known_keys() -> None:
    comment = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]["//"]
    listed = comment.split("): ", 1)[1].rstrip(".").split(", ")
    assert sorted(listed) == sorted(KNOWN_CONTEXT_KEYS)


# ---- account and region -------------------------------------------------------------------------------
def test_account_without_region_is_an_error() -> None:
    message = exit_message(app_with(account="123456789012"))
    assert message == "invalid context: 'account' is set without 'region' (set both or neither)"


def test_region_without_account_is_an_error() -> None:
    message = exit_message(app_with(region="eu-west-1"))
    assert message == "invalid context: 'region' is set without 'account' (set both or neither)"


def test_account_and_region_together_pin_the_environment() -> None:
    env = environment_from_context(app_with(account="123456789012", region="eu-west-1"))
    assert env is not None
    assert (env.account, env.region) == ("123456789012", "eu-west-1")


def test_neither_account_nor_region_is_environment_agnostic() -> None:
    assert environment_from_context(app_with()) is None
    assert environment_from_context(app_with(account="", region="")) is None


# ---- template validation ------------------------------------------------------------------------------
_INVALID_APP = """
import sys, tempfile
import aws_cdk as cdk
from app import build_app
from tests.helpers import cdk_json_context

app = build_app(cdk.App(outdir=tempfile.mkdtemp(), context=cdk_json_context()))
stack = app.node.find_child("ReceiptLabeling-dev")
cdk.CfnResource(stack, "NotATopic", type="AWS::SNS::Topic", properties={"TopicName": 7, "Colour": "blue"})
app.synth()
"""


def synth_invalid_app(**environment: str) -> subprocess.CompletedProcess[str]:
    """The app plus a resource the template validator rejects, synthesized in a fresh process.

    Fresh, so that CDK's Node process starts with ``environment`` as ``cdk synth`` would start it.
    """
    env = {k: v for k, v in os.environ.items() if k != "CDK_VALIDATION"} | environment
    return subprocess.run(
        [sys.executable, "-c", _INVALID_APP], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_template_validator_rejects_an_invalid_template() -> None:
    done = synth_invalid_app()
    assert done.returncode != 0
    assert "ValidationFailed" in done.stderr and "'Colour' was unexpected" in done.stderr


def test_cdk_validation_false_turns_the_template_validation_off() -> None:
    done = synth_invalid_app(CDK_VALIDATION="false")
    assert done.returncode == 0, done.stderr[-2000:]
