"""Raw ``npx --no-install cdk ...`` from the repository root, as typed in a shell without the venv active.

PATH holds the pinned CLI (node_modules/.bin) and Node, never .venv/bin; the jsii Node-version
variable is unset, so any end-of-life banner would show. cdk.json's ``app`` must find the venv itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.integration

BANNER = "end-of-life"


def cli_env() -> dict[str, str]:
    node = shutil.which("node")
    if node is None or not (REPO_ROOT / "node_modules" / ".bin" / "cdk").exists():
        pytest.skip("needs Node and the pinned CDK CLI (make install)")
    if not (REPO_ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("needs .venv (make install)")
    node_dir = str(Path(node).parent)
    venv_bin = str(REPO_ROOT / ".venv" / "bin")
    assert node_dir != venv_bin
    # No AWS_* (the CLI would try to resolve an account with conftest's fake keys), no venv, no jsii silencer.
    dropped = ("AWS_", "JSII_", "CDK_", "VIRTUAL_ENV", "PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PATH"] = os.pathsep.join(
        dict.fromkeys([str(REPO_ROOT / "node_modules" / ".bin"), node_dir, "/usr/bin", "/bin"])
    )
    env["CDK_DISABLE_VERSION_CHECK"] = "1"
    return env


def npx_cdk(*args: str, outdir: Path) -> subprocess.CompletedProcess[str]:
    # --output keeps the run away from a cdk.out another command may be using; the app runs the same.
    return subprocess.run(
        ["npx", "--no-install", "cdk", *args, "--output", str(outdir)],
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_synth_with_a_mistyped_context_key_fails_naming_the_known_key(tmp_path: Path) -> None:
    result = npx_cdk("synth", "--quiet", "-c", "max_concurency=5", outdir=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "invalid context: unknown key 'max_concurency' (did you mean 'max_concurrency'?)" in result.stderr
    assert "No module named" not in result.stderr
    assert BANNER not in result.stdout + result.stderr


def test_ls_works_without_the_venv_and_quietly(tmp_path: Path) -> None:
    result = npx_cdk("ls", outdir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["ReceiptLabeling-dev"]
    assert BANNER not in result.stdout + result.stderr
