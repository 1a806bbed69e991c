"""Shared test helpers: synthesizing the app offline with cdk.json's context."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Tests never reach AWS: no credentials, and a region so boto3 clients can be built.
for _var in [v for v in os.environ if v.startswith("AWS_")]:
    del os.environ[_var]
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def cdk_json_context() -> dict[str, Any]:
    return dict(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])


def synth_app(outdir: Path, **context: Any) -> Any:
    """Build the app as `cdk synth` does (cdk.json context plus overrides) and synthesize it."""
    import aws_cdk as cdk

    from app import build_app

    merged = cdk_json_context()
    merged.update(context)
    app = cdk.App(outdir=str(outdir), context=merged)
    build_app(app)
    return app.synth()


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One synthesis of the default app, shared by the tests that only read it."""
    return synth_app(tmp_path_factory.mktemp("cdk.out"))


# The loopback Ollama server (`ollama_server` fixture; API in tests/ollama_server.py's docstring).
from tests.ollama_server import ollama_server  # noqa: E402, F401

# One synthesis with cdk-nag's AwsSolutions and Serverless packs (`nag_synth`; tests/security_synth.py).
from tests.security_synth import nag_synth  # noqa: E402, F401
