"""One synthesis of the app (cdk.json context) with cdk-nag's AwsSolutions and Serverless packs, for the
security and fault suites (tests/unit/test_security_*.py, tests/unit/test_faults_*.py,
tests/integration/test_security_checkov.py). The session fixture ``nag_synth`` is registered in
tests/conftest.py, so one pytest run synthesizes once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import build_cdk_app


@dataclass(frozen=True)
class NagSynth:
    outdir: Path
    app: Any
    stack: Any
    template: dict[str, Any]
    report: dict[str, Any]  # validation-report.json (cdk-nag's findings per pack)
    error: str | None  # the synthesis error, if validation failed


def synth_with_nag(outdir: Path, **context: Any) -> NagSynth:
    """The app (cdk.json context plus ``context``) synthesized into ``outdir`` with both cdk-nag packs."""
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks, ServerlessChecks

    app = build_cdk_app(outdir, **context)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    error: str | None = None
    try:
        app.synth()
    except Exception as exc:  # a failed validation still writes the report; the tests show it
        error = str(exc)
    (stack,) = [c for c in app.node.children if isinstance(c, cdk.Stack)]
    template = json.loads((outdir / f"{stack.artifact_id}.template.json").read_text())
    report = json.loads((outdir / "validation-report.json").read_text())
    return NagSynth(outdir=outdir, app=app, stack=stack, template=template, report=report, error=error)


@pytest.fixture(scope="session")
def nag_synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NagSynth]:
    """The default app synthesized once with both cdk-nag packs; see :func:`synth_with_nag`."""
    yield synth_with_nag(tmp_path_factory.mktemp("cdk.out.nag"))
