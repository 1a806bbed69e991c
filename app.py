#!/usr/bin/env python3
"""CDK entry point: the only place that reads CDK context or the environment."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re

# jsii checks the Node.js major version when the first ``aws_cdk`` import starts its Node runtime; the
# value lists the majors to stay quiet about. Set here so a raw ``npx cdk ...`` is as quiet as ``make``.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk

from constructs.receipt_labeling_stack import PipelineSettings, ReceiptLabelingStack

# Every context key this app reads: the settings' fields plus the environment (cdk.json's "//" comment
# lists the same; README 'Configuration').
KNOWN_CONTEXT_KEYS = frozenset({field.name for field in dataclasses.fields(PipelineSettings)} | {"account", "region"})
# Only plain snake_case keys are ours: CDK's own (feature flags "@aws-cdk/...", "aws:cdk:...", "cdk-...",
# lookups "availability-zones:...") all hold '@', ':', '/' or '-'.
_APP_KEY = re.compile(r"[a-z][a-z0-9_]*")


def _context(app: cdk.App, key: str) -> object | None:
    value = app.node.try_get_context(key)
    return None if value in (None, "") else value


def _int_context(app: cdk.App, key: str, default: int) -> int:
    value = _context(app, key)
    if value is None:
        return default
    try:
        return int(str(value))
    except ValueError:
        raise SystemExit(f"context '{key}' must be an integer, got {value!r}") from None


def _bool_context(app: cdk.App, key: str) -> bool:
    value = _context(app, key)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).lower()
    if text not in {"true", "false"}:
        raise SystemExit(f"context '{key}' must be true or false, got {value!r}")
    return text == "true"


def check_context_keys(app: cdk.App) -> None:
    """Stop on a snake_case context key the app does not read, e.g. a mistyped ``-c max_concurency=5``."""
    context = app.node.get_all_context() or {}
    unknown = sorted(k for k in context if _APP_KEY.fullmatch(str(k)) and k not in KNOWN_CONTEXT_KEYS)
    if not unknown:
        return
    problems = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(KNOWN_CONTEXT_KEYS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(KNOWN_CONTEXT_KEYS))}"
        problems.append(f"unknown key {key!r} ({hint})")
    raise SystemExit(f"invalid context: {'; '.join(problems)}")


def environment_from_context(app: cdk.App) -> cdk.Environment | None:
    """``account`` and ``region`` together pin the stack; neither leaves it environment-agnostic."""
    account, region = _context(app, "account"), _context(app, "region")
    if account is None and region is None:
        return None
    if account is None or region is None:
        given, missing = ("account", "region") if region is None else ("region", "account")
        raise SystemExit(f"invalid context: '{given}' is set without '{missing}' (set both or neither)")
    return cdk.Environment(account=str(account), region=str(region))


def settings_from_context(app: cdk.App) -> PipelineSettings:
    """The stack's settings from ``app``'s context; an invalid value stops with one line naming it."""

    def opt(key: str) -> str | None:
        value = _context(app, key)
        return None if value is None else str(value)

    try:
        return PipelineSettings(
            stage=opt("stage") or "dev",
            table_name=opt("table_name"),
            ollama_model=opt("ollama_model") or "gpt-oss:120b",
            ollama_base_url=opt("ollama_base_url") or "https://ollama.com",
            ollama_api_key_secret_name=opt("ollama_api_key_secret_name"),
            langsmith_api_key_secret_name=opt("langsmith_api_key_secret_name"),
            langsmith_tracing=_bool_context(app, "langsmith_tracing"),
            max_concurrency=_int_context(app, "max_concurrency", 3),
            tolerated_failure_percentage=_int_context(app, "tolerated_failure_percentage", 10),
            tolerated_failure_count=_int_context(app, "tolerated_failure_count", 100),
            wait_for_build=_bool_context(app, "wait_for_build"),
            alarm_email=opt("alarm_email"),
        )
    except ValueError as err:
        raise SystemExit(f"invalid context: {err}") from None


@functools.cache
def template_validator() -> cdk.CloudFormationValidatePlugin:
    """CDK's built-in CloudFormation template validator (default rules), one per process like CDK's own."""
    return cdk.CloudFormationValidatePlugin()


def register_template_validator(app: cdk.App) -> None:
    """Register the template validator before any construct exists: a faster synth (docs/benchmarks.md)."""
    if os.environ.get("CDK_VALIDATION") != "false":
        cdk.Validations.of(app).add_plugins(template_validator())


def build_app(app: cdk.App | None = None) -> cdk.App:
    """Add the receipt-labeling stack, configured from context, to ``app`` (a new ``cdk.App`` by default)."""
    app = app or cdk.App()
    register_template_validator(app)
    check_context_keys(app)
    settings = settings_from_context(app)
    env = environment_from_context(app)
    ReceiptLabelingStack(
        app,
        f"ReceiptLabeling-{settings.stage}",
        settings=settings,
        env=env,
        description=f"Receipt labeling pipeline ({settings.stage})",
    )
    return app


if __name__ == "__main__":
    build_app().synth()
