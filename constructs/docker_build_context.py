"""The minimal Docker build context of CodeBuildDockerImage: file selection, content hash, staging.

Synth-time and deterministic: the same files, Dockerfile path, build arguments and platform give the
same image tag (and S3 asset) on every synth; what is hashed: docs/image-build.md ("What gets built").
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Directory names never shipped to the build (anywhere in the tree).
EXCLUDED_DIR_NAMES: frozenset[str] = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "node_modules",
        "cdk.out",
        ".cdk.staging",
        "tests",
        "test",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".hypothesis",
        ".tox",
        ".nox",
        ".idea",
        ".vscode",
    }
)
# File name patterns never shipped to the build.
EXCLUDED_FILE_PATTERNS: tuple[str, ...] = ("*.pyc", "*.pyo", ".DS_Store", ".coverage", "*.egg-info")

HASH_FORMAT_VERSION = "codebuild-docker-image/v1"
TAG_LENGTH = 32  # hex characters of the sha256 (128 bits)


@dataclass(frozen=True)
class ContextFile:
    """One file of the build context: its path relative to the context root and normalized mode."""

    relative_path: str  # POSIX separators
    source: Path
    mode: int  # 0o644 or 0o755


@dataclass(frozen=True)
class BuildContext:
    """The selected files of a build context and their content tag."""

    root: Path
    dockerfile: str  # POSIX path relative to root
    files: tuple[ContextFile, ...]
    image_tag: str


def _excluded(parts: Iterable[str]) -> bool:
    return any(part in EXCLUDED_DIR_NAMES or part.endswith(".egg-info") for part in parts)


def _excluded_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in EXCLUDED_FILE_PATTERNS)


def _normalized_mode(path: Path) -> int:
    return 0o755 if os.stat(path).st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) else 0o644


def _relative(root: Path, path: Path, what: str) -> str:
    try:
        return PurePosixPath(path.resolve().relative_to(root).as_posix()).as_posix()
    except ValueError:
        raise ValueError(f"{what} {str(path)!r} is outside the build context {str(root)!r}") from None


def collect_files(root: Path, source_paths: Sequence[str], dockerfile: str) -> tuple[ContextFile, ...]:
    """The files of ``source_paths`` (files or directories, relative to ``root``) minus exclusions."""
    selected: dict[str, ContextFile] = {}
    for raw in [*source_paths, dockerfile]:
        start = (root / raw).resolve()
        if not start.exists():
            raise ValueError(f"source path {raw!r} does not exist in the build context {str(root)!r}")
        relative = _relative(root, start, "source path")
        if relative != "." and _excluded(PurePosixPath(relative).parts):
            continue
        if start.is_file():
            if not _excluded_file(start.name) or relative == dockerfile:
                selected[relative] = ContextFile(relative, start, _normalized_mode(start))
            continue
        for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not _excluded([d]))
            for name in sorted(filenames):
                if _excluded_file(name):
                    continue
                path = Path(dirpath) / name
                if not path.is_file():  # dangling symlink, socket, ...
                    continue
                rel = _relative(root, Path(dirpath).resolve() / name, "file")
                selected[rel] = ContextFile(rel, path, _normalized_mode(path))
    return tuple(selected[key] for key in sorted(selected))


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compute_image_tag(
    files: Sequence[ContextFile], *, dockerfile: str, build_args: Mapping[str, str], platform: str
) -> str:
    """Content tag: sha256 over (path, mode, content digest) of each file, the Dockerfile path,
    the build arguments (sorted) and the platform. Truncated to ``TAG_LENGTH`` hex characters."""
    digest = hashlib.sha256()

    def line(*fields: str) -> None:
        digest.update("\0".join(fields).encode() + b"\n")

    line(HASH_FORMAT_VERSION)
    line("platform", platform)
    line("dockerfile", dockerfile)
    for key in sorted(build_args):
        line("build-arg", key, build_args[key])
    for item in sorted(files, key=lambda f: f.relative_path):
        line("file", item.relative_path, f"{item.mode:o}", _file_digest(item.source))
    return digest.hexdigest()[:TAG_LENGTH]


def resolve_context(
    *,
    root: Path,
    dockerfile_path: str,
    source_paths: Sequence[str] | None,
    build_args: Mapping[str, str],
    platform: str,
) -> BuildContext:
    """Select the context files and compute the image tag (no file is written)."""
    root = root.resolve()
    if not root.is_dir():
        raise ValueError(f"build context {str(root)!r} is not a directory")
    dockerfile_abs = Path(dockerfile_path) if Path(dockerfile_path).is_absolute() else root / dockerfile_path
    if not dockerfile_abs.is_file():
        raise ValueError(f"Dockerfile {dockerfile_path!r} not found (context {str(root)!r})")
    dockerfile = _relative(root, dockerfile_abs, "Dockerfile")
    if source_paths is None:
        dockerfile_dir = PurePosixPath(dockerfile).parent.as_posix()
        source_paths = ["receipt_dynamo", "receipt_label", dockerfile_dir]
    files = collect_files(root, source_paths, dockerfile)
    tag = compute_image_tag(files, dockerfile=dockerfile, build_args=build_args, platform=platform)
    return BuildContext(root=root, dockerfile=dockerfile, files=files, image_tag=tag)


def _holds_exactly(directory: Path, files: Sequence[ContextFile]) -> bool:
    present = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir())
    if present != sorted(f.relative_path for f in files):
        return False
    return all(
        (directory / f.relative_path).stat().st_mode & 0o777 == f.mode
        and _file_digest(directory / f.relative_path) == _file_digest(f.source)
        for f in files
    )


def stage_context(context: BuildContext, staging_root: Path | None = None) -> Path:
    """Copy the selected files into ``<staging_root>/<tag>`` (normalized modes) and return it.

    The directory name is the content tag. An existing directory is reused only when it holds exactly
    these files with the same content and modes (a temp cleaner may have removed some of them); a
    new one is written to a sibling temporary directory first and renamed, so concurrent synths are safe.
    """
    base = staging_root or Path(tempfile.gettempdir()) / "cdk-codebuild-docker-image"
    target = base / context.image_tag
    if target.is_dir():
        if _holds_exactly(target, context.files):
            return target
        shutil.rmtree(target, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{context.image_tag}.", dir=base))
    try:
        for item in context.files:
            destination = scratch / item.relative_path
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.source, destination)
            os.chmod(destination, item.mode)
        try:
            os.rename(scratch, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target
