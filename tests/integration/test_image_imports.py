"""Each worker image (process_receipt, validate_labels) holds everything its handler imports.

The images' one lock (lambdas/requirements.lock: every release pinned, with the sha256 of
each of its wheels) is installed for this machine (the arm64 wheels cannot run here) into an empty
folder with ``pip install --require-hashes --target`` and byte-compiled as the Dockerfile does, by CPython
3.12 like the image's when it is installed (``bench.bench_image.image_python``; a compile error
fails the install); the handler and both packages are laid out beside them like
${LAMBDA_TASK_ROOT} (the validate image's folder is the process one with its own handler.py);
then a fresh interpreter that sees only the standard library and that folder (``-I -S``: no
site-packages, no PYTHONPATH, no current directory) imports the handler and builds what it builds
lazily (the chat model).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_image import (
    _fresh_cached_dir,
    compileall_command,
    image_python,
    isolated_python,
    lay_out_task_root,
)
from constructs.labeling_state_machine import IMAGE_LOCK as IMAGE_LOCK_PATH
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.integration


def probe(checks: str, report: str) -> str:
    """A probe that imports the handler as the runtime would, runs ``checks``, and prints one JSON line:
    ``report`` (a dict display's items) plus ``outside``, every module loaded from outside the task root
    and the standard library."""
    return f"""
import json, os, sysconfig
os.environ["DYNAMODB_TABLE_NAME"] = "receipts"
os.environ["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"
os.environ["OLLAMA_MODEL"] = "probe-model"
import handler
from receipt_dynamo import ReceiptNotFoundError
from receipt_label import LLMOutputError, LLMRateLimitError, LLMTransientError
from langchain_core.tracers.langchain import LangChainTracer  # imported only when tracing is on
{checks}
stdlib = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
outside = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not module.__file__.startswith(sys.path[0])
    and not module.__file__.startswith(stdlib)
)
print(json.dumps({{"outside": outside, {report}}}))
"""


#: The process image's probe: the chat model and the table client it builds lazily, the errors it raises.
PROBE = probe(
    """
model = handler.chat_models().current()  # ChatOllama and its HTTP client, without a request
handler.dynamo()
from langsmith import Client
""",
    """
    "handler": handler.__file__,
    "python": "%d.%d" % sys.version_info[:2],
    "callable": callable(handler.lambda_handler),
    "model": type(model).__name__,
    "errors": [handler.InvalidEventError.__name__, ReceiptNotFoundError.__name__,
               LLMRateLimitError.__name__, LLMTransientError.__name__, LLMOutputError.__name__],
""",
)
#: The validate image's probe: its handler, the judging code and the errors it raises, nothing from outside.
VALIDATE_PROBE = probe(
    """
import receipt_label.validation
from receipt_label.pipeline import validate_receipt
""",
    """
    "handler": handler.__file__,
    "callable": callable(handler.lambda_handler) and callable(validate_receipt),
""",
)

IMAGE_LOCK = REPO_ROOT / IMAGE_LOCK_PATH


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


@pytest.fixture(scope="module")
def validate_task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The validate image's ${LAMBDA_TASK_ROOT}: the same locked dependencies and packages, its own handler.py.

    Laid out here rather than by ``lay_out_task_root``: the dependencies' top-level ``__pycache__`` is
    copied, not linked, so the validate handler's byte-code never lands in the shared dependency cache.
    """
    root = tmp_path_factory.mktemp("validate-task") / "var-task"
    root.mkdir()
    for entry in locked_image_dependencies().iterdir():
        if entry.name == "__pycache__":
            shutil.copytree(entry, root / entry.name, ignore=shutil.ignore_patterns("handler.*"))
        else:
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("receipt_dynamo", "receipt_label"):
        shutil.copytree(REPO_ROOT / package, root / package, ignore=ignore)
    shutil.copy2(REPO_ROOT / "lambdas" / "validate_labels" / "handler.py", root / "handler.py")
    code = [str(root / name) for name in ("handler.py", "receipt_dynamo", "receipt_label")]
    subprocess.run(compileall_command(*code), check=True, capture_output=True)
    return root


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


def test_validate_handler_imports_from_its_image_layout_alone(validate_task_root: Path) -> None:
    result = isolated_python(validate_task_root, VALIDATE_PROBE)
    assert result.returncode == 0, result.stderr[-6000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["handler"] == str(validate_task_root / "handler.py")
    assert report["callable"] is True
    assert report["outside"] == [], "modules loaded from outside the task root and the standard library"
