"""The process_receipt container image: cold import time of the handler and arm64 dependency size.

Also the image tests' helpers (tests/integration/test_image_*.py): they resolve, download or install
``lambdas/requirements.txt`` (both worker images' requirements) as the image build does, cached under
``$RECEIPT_LABELING_CACHE`` (default ``${XDG_CACHE_HOME:-~/.cache}/receipt-labeling-pipeline``) in
folders keyed on the requirements file's hash, the platform and the Python version.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from bench import Row
from local_pipeline.template import REPO_ROOT

#: The worker images' requirements (locked in lambdas/requirements.lock, shared by both images).
IMAGE_REQUIREMENTS = REPO_ROOT / "lambdas" / "requirements.txt"
#: What the Dockerfile copies into ${LAMBDA_TASK_ROOT} besides the dependencies.
IMAGE_CODE = ("receipt_dynamo", "receipt_label", "lambdas/process_receipt/handler.py")

#: pip options that select the Lambda image's interpreter: linux/arm64, CPython 3.12, wheels only.
ARM64_CP312 = (
    "--platform",
    "manylinux2014_aarch64",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--only-binary=:all:",
)

#: The Dockerfile's byte-compilation options: hash-based .pyc that a read-only task root never rewrites.
COMPILEALL_OPTIONS = ("-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash")
IMAGE_PYTHON_VERSION = "3.12"

IMPORT_TIME_TARGET_S = 1.5
DEPENDENCY_MB_TARGET = 100.0


def cache_root() -> Path:
    configured = os.environ.get("RECEIPT_LABELING_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "receipt-labeling-pipeline"


def requirements_key(flavour: str) -> str:
    """A cache folder name for ``flavour`` that changes whenever the image requirements change."""
    digest = hashlib.sha256(IMAGE_REQUIREMENTS.read_bytes()).hexdigest()[:16]
    return f"{flavour}-{digest}"


def _version_of(python: str) -> str | None:
    try:
        probe = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    return probe.stdout.strip() if probe.returncode == 0 else None


@functools.cache
def image_python() -> tuple[str, str]:
    """(interpreter, "major.minor"): a CPython 3.12 like the image's when one is installed, else this one.

    Looked for in ``$IMAGE_PYTHON``, ``python3.12`` on PATH, pyenv's versions and /usr(/local)/bin.
    The arm64 interpreter itself cannot run here; the same CPython version catches version-specific
    import and byte-compilation problems.
    """
    candidates = [os.environ.get("IMAGE_PYTHON", ""), shutil.which(f"python{IMAGE_PYTHON_VERSION}") or ""]
    candidates += sorted(
        (str(p) for p in Path.home().glob(f".pyenv/versions/{IMAGE_PYTHON_VERSION}*/bin/python{IMAGE_PYTHON_VERSION}")),
        reverse=True,
    )
    candidates += [f"/usr/local/bin/python{IMAGE_PYTHON_VERSION}", f"/usr/bin/python{IMAGE_PYTHON_VERSION}"]
    for candidate in filter(None, candidates):
        if _version_of(candidate) == IMAGE_PYTHON_VERSION:
            return candidate, IMAGE_PYTHON_VERSION
    return sys.executable, f"{sys.version_info.major}.{sys.version_info.minor}"


def compileall_command(*paths: str) -> list[str]:
    """The Dockerfile's byte-compilation of ``paths``, run by :func:`image_python`."""
    return [image_python()[0], *COMPILEALL_OPTIONS, "-j", "0", *paths]


def pip(*args: str, python: str = sys.executable, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python``'s pip with the machine's pip configuration (index, mirror, find-links)."""
    return subprocess.run(
        [python, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _fresh_cached_dir(name: str, fill: Sequence[str], *, compile_bytecode: bool, python: str = sys.executable) -> Path:
    """Return cache_root()/name, creating it with ``pip <fill> <tmp>`` first when it is missing.

    The folder is filled under a temporary name and renamed once complete, so an interrupted run
    never leaves a half-filled folder behind that a later run would trust.
    """
    final = cache_root() / name
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        result = pip(*fill, str(staging / "out"), python=python)
        if result.returncode != 0:
            raise RuntimeError(f"pip {' '.join(fill)} failed:\n{result.stdout}\n{result.stderr}")
        if compile_bytecode:
            # As the Dockerfile does: hash-based .pyc, so a read-only task root never recompiles.
            compiled = subprocess.run(
                compileall_command(str(staging / "out")),
                capture_output=True,
                text=True,
                check=False,
            )
            if compiled.returncode != 0:
                raise RuntimeError(f"compileall failed:\n{compiled.stdout}\n{compiled.stderr}")
        try:
            (staging / "out").rename(final)
        except OSError:  # another process finished first: use its folder
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def local_image_dependencies() -> Path:
    """The image requirements installed by :func:`image_python`'s pip for this machine (``--target``)."""
    python, version = image_python()
    tag = f"cpython{version.replace('.', '')}-{sys.platform}-{os.uname().machine}"
    return _fresh_cached_dir(
        requirements_key(f"deps-{tag}"),
        ["install", "--quiet", "--no-compile", "--only-binary=:all:", "-r", str(IMAGE_REQUIREMENTS), "--target"],
        compile_bytecode=True,
        python=python,
    )


def arm64_wheels() -> Path:
    """The image requirements' linux/arm64 CPython 3.12 wheels (``pip download``), cached."""
    return _fresh_cached_dir(
        requirements_key("wheels-arm64-cp312"),
        ["download", "--quiet", *ARM64_CP312, "-r", str(IMAGE_REQUIREMENTS), "--dest"],
        compile_bytecode=False,
    )


def lay_out_task_root(dest: Path, dependencies: Path) -> Path:
    """Build a ${LAMBDA_TASK_ROOT} as the Dockerfile does: dependencies, both packages, handler.py.

    Dependencies are symlinked (they are large and read-only here); our code is copied without
    stray ``__pycache__`` folders and byte-compiled like the image does.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for entry in dependencies.iterdir():
        (dest / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for relative in IMAGE_CODE:
        source = REPO_ROOT / relative
        target = dest / source.name
        if target.is_symlink() or target.exists():
            raise RuntimeError(f"{source.name} is both a dependency and our code")
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copy2(source, target)
    subprocess.run(
        compileall_command(*(str(dest / Path(p).name) for p in IMAGE_CODE)),
        check=True,
        capture_output=True,
    )
    return dest


def isolated_python(task_root: Path, code: str, *extra_flags: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that sees the standard library and ``task_root`` only.

    -I: no PYTHONPATH, no user site, no current directory; -S: no site-packages (not even this
    virtualenv's). The Lambda runtime environment variables the handler reads are not set.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run(
        [
            image_python()[0],
            *extra_flags,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(task_root)!r})\n{code}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(task_root),
        timeout=120,
        check=False,
    )


_IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def import_time_seconds(task_root: Path) -> float:
    """Cumulative time of ``import handler`` as reported by ``python -X importtime``."""
    result = isolated_python(task_root, "import handler", "-X", "importtime")
    if result.returncode != 0:
        raise RuntimeError(f"import handler failed:\n{result.stderr[-4000:]}")
    total_us = 0
    for line in result.stderr.splitlines():
        match = _IMPORTTIME_LINE.match(line)
        if match and match.group(3) == " ":  # top-level imports only: nested ones are inside them
            total_us += int(match.group(2))
    return total_us / 1e6


def unpacked_bytes(wheel_dir: Path) -> int:
    """Installed size of a folder of wheels: the sum of their uncompressed members."""
    return sum(info.file_size for wheel in wheel_dir.glob("*.whl") for info in zipfile.ZipFile(wheel).infolist())


def unpack_and_compile(wheel_dir: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    """Unpack the wheels into ``dest`` and byte-compile them as the Dockerfile's dependency stage does."""
    for wheel in wheel_dir.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(dest)  # wheels from the index, into a throw-away folder
    return subprocess.run(compileall_command(str(dest)), capture_output=True, text=True, check=False)


def installed_bytes_with_bytecode(wheel_dir: Path) -> int:
    """Size of the dependency layer: the wheels unpacked and byte-compiled (by :func:`image_python`)."""
    with tempfile.TemporaryDirectory() as tmp:
        unpack_and_compile(wheel_dir, Path(tmp))
        return sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())


def rows() -> list[Row]:
    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        task_root = lay_out_task_root(Path(tmp) / "task", local_image_dependencies())
        import_time_seconds(task_root)  # warm the OS page cache: a container's files are local too
        # Wall-clock import time is noisy on a shared machine: the best of 5 is the estimate (as timeit
        # does), the median shows the spread.
        times = sorted(import_time_seconds(task_root) for _ in range(5))
    best, median = times[0], statistics.median(times)
    out.append(
        Row(
            "image",
            f"process handler import, CPython {image_python()[1]} -X importtime (best of 5, median {median:.2f} s)",
            f"{best:.2f} s",
            f"< {IMPORT_TIME_TARGET_S} s",
            best < IMPORT_TIME_TARGET_S,
        )
    )
    wheels = arm64_wheels()
    megabytes = unpacked_bytes(wheels) / 1e6
    out.append(
        Row(
            "image",
            f"arm64 cp312 dependencies unpacked ({len(list(wheels.glob('*.whl')))} wheels)",
            f"{megabytes:.1f} MB",
            f"< {DEPENDENCY_MB_TARGET:.0f} MB",
            megabytes < DEPENDENCY_MB_TARGET,
        )
    )
    with_bytecode = installed_bytes_with_bytecode(wheels) / 1e6
    out.append(
        Row(
            "image",
            f"arm64 dependencies incl. .pyc (compiled by CPython {image_python()[1]})",
            f"{with_bytecode:.1f} MB",
        )
    )
    return out
