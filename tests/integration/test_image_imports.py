"""The image holds everything the handler imports.

The image's lock (lambdas/process_receipt/requirements.lock: every release pinned, with the sha256 of
each of its wheels) is installed for this machine (the arm64 wheels cannot run here) into an empty
folder with ``pip install --require-hashes --target`` and byte-compiled as the Dockerfile does, by CPython
3.12 like the image's when it is installed (``bench.bench_image.image_python``; a compile error
fails the install); the handler and both packages are laid out beside them like
${LAMBDA_TASK_ROOT}; then a fresh interpreter that sees only the standard library and that folder
(``-I -S``: no site-packages, no PYTHONPATH, no current directory) imports the handler and builds
what it builds lazily (the chat model).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from bench.bench_image import PROCESS_DIR, _fresh_cached_dir, image_python, isolated_python, lay_out_task_root

pytestmark = pytest.mark.integration

PROBE = """
import json, os, sysconfig
os.environ["DYNAMODB_TABLE_NAME"] = "receipts"
os.environ["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"
os.environ["OLLAMA_MODEL"] = "probe-model"
import handler
model = handler.chat_models().current()  # ChatOllama and its HTTP client, without a request
handler.dynamo()
from receipt_dynamo import ReceiptNotFoundError
from receipt_label import LLMOutputError, LLMRateLimitError, LLMTransientError
from langchain_core.tracers.langchain import LangChainTracer  # imported only when tracing is on
from langsmith import Client
stdlib = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
outside = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not module.__file__.startswith(sys.path[0])
    and not module.__file__.startswith(stdlib)
)
print(json.dumps({
    "handler": handler.__file__,
    "python": "%d.%d" % sys.version_info[:2],
    "callable": callable(handler.lambda_handler),
    "model": type(model).__name__,
    "outside": outside,
    "errors": [handler.InvalidEventError.__name__, ReceiptNotFoundError.__name__,
               LLMRateLimitError.__name__, LLMTransientError.__name__, LLMOutputError.__name__],
}))
"""


IMAGE_LOCK = PROCESS_DIR / "requirements.lock"


def locked_image_dependencies() -> Path:
    """The lock installed by :func:`image_python`'s pip as the Dockerfile installs it, cached per lock content."""
    python, version = image_python()
    digest = hashlib.sha256(IMAGE_LOCK.read_bytes()).hexdigest()[:16]
    tag = f"cpython{version.replace('.', '')}-{sys.platform}-{os.uname().machine}"
    install = ["install", "--quiet", "--no-compile", "--only-binary=:all:", "--require-hashes"]
    # bench.bench_image's cache helper: filled under a temporary name, renamed once complete.
    return _fresh_cached_dir(
        f"locked-deps-{tag}-{digest}",
        [*install, "-r", str(IMAGE_LOCK), "--target"],
        compile_bytecode=True,
        python=python,
    )


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lay_out_task_root(tmp_path_factory.mktemp("task") / "var-task", locked_image_dependencies())


def test_handler_imports_from_the_image_layout_alone(task_root: Path) -> None:
    result = isolated_python(task_root, PROBE)
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["handler"] == str(task_root / "handler.py")
    assert report["python"] == image_python()[1]
    assert report["callable"] is True
    assert report["model"] == "ChatOllama"
    assert report["outside"] == [], "modules loaded from outside the task root and the standard library"
    assert report["errors"] == [
        "InvalidEventError",
        "ReceiptNotFoundError",
        "LLMRateLimitError",
        "LLMTransientError",
        "LLMOutputError",
    ]


def test_the_isolated_interpreter_cannot_see_this_virtualenv(task_root: Path) -> None:
    # moto is installed in .venv but not in the image: the probe must not find it.
    result = isolated_python(task_root, "import moto")
    assert result.returncode != 0 and "No module named 'moto'" in result.stderr


def test_dependencies_and_code_carry_bytecode_of_the_image_python(task_root: Path) -> None:
    tag = "cpython-" + image_python()[1].replace(".", "")
    for module in ("handler", "receipt_label/__init__", "pydantic/main", "langgraph/graph/state"):
        folder = (task_root / module).parent
        name = (task_root / module).name
        assert list((folder / "__pycache__").glob(f"{name}.{tag}.pyc")), f"{module} has no {tag} bytecode"
