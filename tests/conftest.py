"""Session fixtures: the default app synthesized once, the loopback Ollama server and the cdk-nag synthesis.

Helpers live in tests/helpers.py; ``REPO_ROOT``, ``cdk_json_context`` and ``synth_app`` stay importable
from here for the modules that import them from this file.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, cdk_json_context, synth_app

__all__ = ["REPO_ROOT", "cdk_json_context", "synth_app"]

# Tests never reach AWS: no credentials, and a region so boto3 clients can be built.
for _var in [v for v in os.environ if v.startswith("AWS_")]:
    del os.environ[_var]
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One synthesis of the default app, shared by the tests that only read it."""
    return synth_app(tmp_path_factory.mktemp("cdk.out"))


# The loopback Ollama server (`ollama_server` fixture; API in tests/ollama_server.py's docstring).
from tests.ollama_server import ollama_server  # noqa: E402, F401

# One synthesis with cdk-nag's AwsSolutions and Serverless packs (`nag_synth`; tests/security_synth.py).
from tests.security_synth import nag_synth  # noqa: E402, F401
