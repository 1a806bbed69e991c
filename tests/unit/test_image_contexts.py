"""Which edit rebuilds which worker image: the content tags of the process and validate build contexts.

Each image's context is what ``LabelingStateMachine`` passes to ``CodeBuildDockerImage``
(``Workflow.image_build``): the one Dockerfile, the shared sources (receipt_dynamo, receipt_label, the
one lock) plus the worker's own folder, named by a build argument. The table runs each edit on a copy
of the real repository files that go into either context.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from constructs.create_labels_step_function import CREATE_LABELS
from constructs.docker_build_context import resolve_context
from constructs.labeling_state_machine import (
    IMAGE_DOCKERFILE,
    IMAGE_LOCK,
    IMAGE_SHARED_SOURCES,
    WORKER_DIR_ARG,
    Workflow,
)
from constructs.validate_pending_labels_step_function import VALIDATE_LABELS
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.unit

WORKFLOWS: dict[str, Workflow] = {"process": CREATE_LABELS, "validate": VALIDATE_LABELS}


def tags(root: Path) -> dict[str, str]:
    """Image -> content tag, with the construct's context selection and defaults."""
    return {
        image: resolve_context(root=root, platform="linux/arm64", **workflow.image_build()).image_tag
        for image, workflow in WORKFLOWS.items()
    }


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's files the two contexts may select, and a doc beside them."""
    root = tmp_path_factory.mktemp("repository")
    for relative in {
        IMAGE_DOCKERFILE,
        *IMAGE_SHARED_SOURCES,
        *(w.image_dir for w in WORKFLOWS.values()),
        "docs/image-build.md",
    }:
        source, target = REPO_ROOT / relative, root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(source, target)
    return root


def append(relative: str, text: str = "\n# edited\n") -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        with (root / relative).open("a") as handle:
            handle.write(text)

    return edit


#: edit -> the images whose tag it changes.
REBUILDS: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    "process handler": (append("lambdas/process_receipt/handler.py"), {"process"}),
    "validate handler": (append("lambdas/validate_labels/handler.py"), {"validate"}),
    "shared Dockerfile": (append(IMAGE_DOCKERFILE), {"process", "validate"}),
    "receipt_label": (append("receipt_label/prompts.py"), {"process", "validate"}),
    "receipt_dynamo": (append("receipt_dynamo/client.py"), {"process", "validate"}),
    "shared lock": (append(IMAGE_LOCK, "# re-locked\n"), {"process", "validate"}),
    "docs": (append("docs/image-build.md"), set()),
    "requirements.txt without a new lock": (append("lambdas/requirements.txt", "# comment\n"), set()),
}


@pytest.fixture(scope="module")
def baseline(repository: Path) -> dict[str, str]:
    return tags(repository)


def test_the_two_images_have_different_tags(baseline: dict[str, str]) -> None:
    assert baseline["process"] != baseline["validate"]


@pytest.mark.parametrize("edit", list(REBUILDS), ids=list(REBUILDS))
def test_which_edit_rebuilds_which_image(tmp_path: Path, repository: Path, baseline: dict[str, str], edit: str) -> None:
    root = tmp_path / "checkout"
    shutil.copytree(repository, root)
    change, rebuilt = REBUILDS[edit]
    change(root)
    after = tags(root)
    assert {image for image in WORKFLOWS if after[image] != baseline[image]} == rebuilt


@pytest.mark.parametrize("image", list(WORKFLOWS))
def test_each_context_holds_every_copy_source_of_its_dockerfile(image: str) -> None:
    """The construct's source paths and the Dockerfile's COPY lines (with the build argument) name the same files."""
    workflow = WORKFLOWS[image]
    build = workflow.image_build()
    assert build["build_args"] == {WORKER_DIR_ARG: workflow.image_dir}
    text = (REPO_ROOT / IMAGE_DOCKERFILE).read_text().replace("${" + WORKER_DIR_ARG + "}", workflow.image_dir)
    copies = re.findall(r"^COPY\s+(?!--from)(\S+)\s", text, flags=re.MULTILINE)
    context = resolve_context(root=REPO_ROOT, platform="linux/arm64", **build)
    shipped = [f.relative_path for f in context.files]
    assert "$" not in "".join(copies), copies
    for source in copies:
        assert any(path == source or path.startswith(f"{source}/") for path in shipped), source
    # Nothing of another worker's folder, no other lambdas/ file but the Dockerfile and the lock.
    others = [p for p in shipped if p.startswith("lambdas/") and not p.startswith(f"{workflow.image_dir}/")]
    assert sorted(others) == sorted([IMAGE_DOCKERFILE, IMAGE_LOCK])
