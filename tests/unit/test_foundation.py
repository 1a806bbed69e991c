"""The project's layout: the constructs/ namespace merge, and a deterministic synth."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, synth_app

pytestmark = pytest.mark.unit


def test_constructs_is_a_namespace_directory() -> None:
    assert not (REPO_ROOT / "constructs" / "__init__.py").exists(), (
        "constructs/__init__.py shadows the constructs library: every aws_cdk import then fails "
        "with \"No module named 'constructs._jsii'\". Remove it (see README, Layout)."
    )


def test_library_and_our_modules_import_side_by_side() -> None:
    # A fresh interpreter, so a module cached by another test cannot hide a broken merge.
    code = (
        "import constructs, aws_cdk\n"
        "from constructs import Construct\n"
        "from constructs.receipt_labeling_stack import ReceiptLabelingStack\n"
        "assert issubclass(ReceiptLabelingStack, Construct)\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    assert importlib.import_module("constructs.receipt_table").ReceiptTable


def test_two_synths_are_byte_identical(tmp_path) -> None:
    first = synth_app(tmp_path / "a")
    second = synth_app(tmp_path / "b")
    names = sorted(s.template_file for s in first.stacks)
    assert names == sorted(s.template_file for s in second.stacks)
    assert names, "the app synthesized no stack"
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_app_rejects_bad_context(tmp_path) -> None:
    with pytest.raises(SystemExit, match="max_concurrency"):
        synth_app(tmp_path, max_concurrency="lots")
    with pytest.raises(SystemExit, match="stage"):
        synth_app(tmp_path, stage="bad stage!")
