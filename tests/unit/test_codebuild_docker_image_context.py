"""The content hash (image tag) of CodeBuildDockerImage's minimal build context, over a table of edits."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from constructs.docker_build_context import resolve_context, stage_context

pytestmark = pytest.mark.unit

DOCKERFILE = "lambdas/process_receipt/Dockerfile"
BUILD_ARGS = {"PYTHON_VERSION": "3.13"}
FILES = {
    "receipt_dynamo/__init__.py": "from .client import DynamoClient\n",
    "receipt_dynamo/client.py": "class DynamoClient: ...\n",
    "receipt_label/__init__.py": "from .graph import label_receipt\n",
    "receipt_label/graph.py": "def label_receipt(details, *, llm): ...\n",
    DOCKERFILE: "FROM public.ecr.aws/lambda/python:3.13\n",
    "lambdas/process_receipt/handler.py": "def lambda_handler(event, context): ...\n",
    "lambdas/process_receipt/requirements.txt": "pydantic==2.11.0\n",
    "lambdas/list_receipts/handler.py": "def lambda_handler(event, context): ...\n",
    "README.md": "# readme\n",
    "tests/unit/test_x.py": "def test_x(): ...\n",
    "receipt_label/__pycache__/graph.cpython-313.pyc": "\0compiled",
    ".git/HEAD": "ref: refs/heads/main\n",
    "cdk.out/manifest.json": "{}\n",
    "pyproject.toml": "[project]\nname = 'x'\n",
}


def build(root: Path) -> Path:
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o644)
    return root


def tag(root: Path, *, build_args: dict[str, str] = BUILD_ARGS, platform: str = "linux/arm64") -> str:
    return resolve_context(
        root=root, dockerfile_path=DOCKERFILE, source_paths=None, build_args=build_args, platform=platform
    ).image_tag


def write(relative: str, text: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return edit


def chmod(relative: str, mode: int) -> Callable[[Path], None]:
    return lambda root: os.chmod(root / relative, mode)


def touch(relative: str) -> Callable[[Path], None]:
    return lambda root: os.utime(root / relative, (1_000_000_000, 1_000_000_000))


UNCHANGED: dict[str, Callable[[Path], None]] = {
    "README edited": write("README.md", "# readme, now longer\n"),
    "file under tests/ edited": write("tests/unit/test_x.py", "def test_y(): ...\n"),
    "new tests/ inside a package": write("receipt_label/tests/test_graph.py", "def test(): ...\n"),
    "__pycache__/*.pyc added": write("receipt_label/__pycache__/new.cpython-313.pyc", "\0other"),
    "stray .pyc next to source": write("receipt_dynamo/client.pyc", "\0compiled"),
    ".git changed": write(".git/HEAD", "ref: refs/heads/feature\n"),
    "cdk.out changed": write("cdk.out/manifest.json", '{"version": "2"}\n'),
    ".venv inside the handler folder": write("lambdas/process_receipt/.venv/lib/x.py", "x = 1\n"),
    "node_modules": write("receipt_label/node_modules/a/index.js", "module.exports = 1\n"),
    "tool caches": write("receipt_label/.mypy_cache/x.json", "{}\n"),
    "another Lambda's folder": write("lambdas/list_receipts/handler.py", "# changed\n"),
    "pyproject outside the context": write("pyproject.toml", "[project]\nname = 'y'\n"),
    "macOS Finder metadata": write("receipt_label/.DS_Store", "\0\0\0\1Bud1"),
    "coverage data": write("receipt_dynamo/.coverage", "SQLite format 3"),
    "mtime only": touch("receipt_label/graph.py"),
    "group/other read bits only": chmod("receipt_label/graph.py", 0o600),
}
CHANGED: dict[str, Callable[[Path], None]] = {
    "receipt_label source": write("receipt_label/graph.py", "def label_receipt(details, *, llm): return 1\n"),
    "receipt_dynamo source": write("receipt_dynamo/client.py", "class DynamoClient: pass\n"),
    "new file in receipt_label": write("receipt_label/prompts.py", "PROMPT = ''\n"),
    "Dockerfile": write(DOCKERFILE, "FROM public.ecr.aws/lambda/python:3.12\n"),
    "handler": write("lambdas/process_receipt/handler.py", "def lambda_handler(event, context): return {}\n"),
    "image requirements": write("lambdas/process_receipt/requirements.txt", "pydantic==2.12.0\n"),
    "executable bit": chmod("lambdas/process_receipt/handler.py", 0o755),
    "file renamed": lambda root: os.rename(root / "receipt_dynamo/client.py", root / "receipt_dynamo/clients.py"),
}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tag(build(tmp_path_factory.mktemp("baseline")))


@pytest.mark.parametrize("edit", list(UNCHANGED), ids=list(UNCHANGED))
def test_edits_outside_the_context_keep_the_tag(tmp_path: Path, baseline: str, edit: str) -> None:
    root = build(tmp_path)
    UNCHANGED[edit](root)
    assert tag(root) == baseline


@pytest.mark.parametrize("edit", list(CHANGED), ids=list(CHANGED))
def test_edits_inside_the_context_change_the_tag(tmp_path: Path, baseline: str, edit: str) -> None:
    root = build(tmp_path)
    CHANGED[edit](root)
    assert tag(root) != baseline


def test_build_args_and_platform_are_part_of_the_tag(tmp_path: Path, baseline: str) -> None:
    root = build(tmp_path)
    assert tag(root, build_args={"PYTHON_VERSION": "3.12"}) != baseline
    assert tag(root, build_args={}) != baseline
    assert tag(root, build_args={"PYTHON_VERSION": "3.13", "EXTRA": "1"}) != baseline
    assert tag(root, platform="linux/amd64") != baseline
    assert tag(root, build_args={"PYTHON_VERSION": "3.13"}) == baseline


def test_dockerfile_path_is_part_of_the_tag(tmp_path: Path, baseline: str) -> None:
    root = build(tmp_path)
    (root / "lambdas/process_receipt/Dockerfile.arm").write_text(FILES[DOCKERFILE])
    other = resolve_context(
        root=root,
        dockerfile_path="lambdas/process_receipt/Dockerfile.arm",
        source_paths=["receipt_dynamo", "receipt_label", "lambdas/process_receipt"],
        build_args=BUILD_ARGS,
        platform="linux/arm64",
    )
    assert other.image_tag != baseline


def test_the_tag_does_not_depend_on_where_the_context_lives_or_on_source_path_order(
    tmp_path: Path, baseline: str
) -> None:
    root = build(tmp_path / "elsewhere" / "checkout")
    reordered = resolve_context(
        root=root,
        dockerfile_path=str(root / DOCKERFILE),  # absolute, inside the context
        source_paths=["lambdas/process_receipt", "receipt_label/", "./receipt_dynamo", "receipt_label"],
        build_args=BUILD_ARGS,
        platform="linux/arm64",
    )
    assert reordered.image_tag == baseline


def test_the_minimal_context_holds_only_the_packages_and_the_dockerfile_folder(tmp_path: Path) -> None:
    context = resolve_context(
        root=build(tmp_path), dockerfile_path=DOCKERFILE, source_paths=None, build_args={}, platform="linux/arm64"
    )
    assert [f.relative_path for f in context.files] == [
        DOCKERFILE,
        "lambdas/process_receipt/handler.py",
        "lambdas/process_receipt/requirements.txt",
        "receipt_dynamo/__init__.py",
        "receipt_dynamo/client.py",
        "receipt_label/__init__.py",
        "receipt_label/graph.py",
    ]
    assert context.dockerfile == DOCKERFILE


def test_staging_copies_exactly_the_selected_files_with_normalized_modes(tmp_path: Path) -> None:
    root = build(tmp_path / "src")
    os.chmod(root / "receipt_label/graph.py", 0o700)  # executable for the owner only
    context = resolve_context(
        root=root, dockerfile_path=DOCKERFILE, source_paths=None, build_args={}, platform="linux/arm64"
    )
    staged = stage_context(context, tmp_path / "staging")
    assert staged.name == context.image_tag
    shipped = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
    assert shipped == [f.relative_path for f in context.files]
    assert (staged / "receipt_label/graph.py").stat().st_mode & 0o777 == 0o755
    assert (staged / "receipt_dynamo/client.py").stat().st_mode & 0o777 == 0o644
    assert (staged / DOCKERFILE).read_text() == FILES[DOCKERFILE]
    # Staging the same content again reuses the directory.
    assert stage_context(context, tmp_path / "staging") == staged
    assert [p.name for p in (tmp_path / "staging").iterdir()] == [context.image_tag]


def test_a_damaged_staging_directory_is_rebuilt(tmp_path: Path) -> None:
    root = build(tmp_path / "src")
    context = resolve_context(
        root=root, dockerfile_path=DOCKERFILE, source_paths=None, build_args={}, platform="linux/arm64"
    )
    staged = stage_context(context, tmp_path / "staging")
    (staged / "receipt_label/graph.py").unlink()  # e.g. a /tmp cleaner
    (staged / "receipt_dynamo/client.py").write_text("tampered\n")
    again = stage_context(context, tmp_path / "staging")
    assert (again / "receipt_label/graph.py").read_text() == FILES["receipt_label/graph.py"]
    assert (again / "receipt_dynamo/client.py").read_text() == FILES["receipt_dynamo/client.py"]
