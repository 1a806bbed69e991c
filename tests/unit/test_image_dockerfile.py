"""The worker Dockerfile (one for process_receipt and validate_labels): arm64 Lambda base, wheels-only cached pip
from the one shared lock, built-in frontend, minimal copies, hadolint clean; and that lock against its requirements."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field

import pytest

from constructs.labeling_state_machine import IMAGE_DOCKERFILE, WORKER_DIR_ARG
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.unit

#: Each worker image's folder (its handler.py) under lambdas/, passed to the Dockerfile as WORKER_DIR_ARG.
WORKERS = ("process_receipt", "validate_labels")
DOCKERFILE = REPO_ROOT / IMAGE_DOCKERFILE
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"
BASE_IMAGE = re.compile(r"^public\.ecr\.aws/lambda/python:3\.12-arm64(@sha256:[0-9a-f]{64})?$")


@pytest.fixture(params=WORKERS)
def worker(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, rest))
    return result


def test_every_stage_starts_from_the_arm64_python_312_lambda_image() -> None:
    froms = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: dependencies are installed in a stage of their own"
    assert all(BASE_IMAGE.match(image) for image in froms), froms


def test_dependencies_come_from_the_hashed_lock_as_wheels_with_a_pip_cache_mount() -> None:
    runs = [rest for keyword, rest in instructions() if keyword == "RUN" and "pip install" in rest]
    assert len(runs) == 1
    words = shlex.split(runs[0])
    mounts = [w.removeprefix("--mount=") for w in words if w.startswith("--mount=type=cache,")]
    assert len(mounts) == 1
    target = dict(part.split("=", 1) for part in mounts[0].split(","))["target"]
    assert words[words.index("--cache-dir") + 1] == target, "pip must use the cache mount, whatever HOME is"
    assert "--only-binary=:all:" in words
    assert "--require-hashes" in words, "only the locked releases, each file checked against the lock's sha256"
    assert words.count("--requirement") == 1 and "--constraint" not in words
    requirement = words[words.index("--requirement") + 1]
    copies = [rest.split() for keyword, rest in instructions() if keyword == "COPY"]
    assert ["lambdas/requirements.lock", requirement] in copies  # the one lock of every worker image
    assert "requirements-dev" not in DOCKERFILE.read_text()


def test_the_dependency_stage_is_the_same_for_every_worker() -> None:
    """The worker's folder enters only the final stage: every worker image reuses the dependency layers."""
    first, *rest = stages()
    assert not any(WORKER_DIR_ARG in arguments for _, arguments in first)
    assert ("ARG", WORKER_DIR_ARG) in rest[-1], "declared without a default: a build without it fails"


def test_the_builtin_frontend_builds_it_without_a_syntax_directive() -> None:
    # A "# syntax=docker/dockerfile:..." parser directive makes BuildKit pull that frontend image from
    # Docker Hub on every CodeBuild build (anonymous pull limits on shared CodeBuild addresses); the
    # built-in frontend already supports RUN --mount=type=cache.
    text = DOCKERFILE.read_text()
    assert not re.search(r"(?im)^#\s*syntax\s*=", text)
    assert any(keyword == "RUN" and "--mount=type=cache," in rest for keyword, rest in instructions())


def test_final_stage_copies_only_the_handler_and_the_two_packages_and_runs_the_handler(worker: str) -> None:
    final = stages()[-1]
    build_arg = "${" + WORKER_DIR_ARG + "}"
    sources = {
        rest.split()[0].replace(build_arg, f"lambdas/{worker}")
        for keyword, rest in final
        if keyword == "COPY" and not rest.startswith("--from")
    }
    assert sources == {"receipt_dynamo", "receipt_label", f"lambdas/{worker}/handler.py"}
    assert all(rest.split()[-1].startswith("${LAMBDA_TASK_ROOT}") for keyword, rest in final if keyword == "COPY")
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
    assert final[-1] == ("CMD", '["handler.lambda_handler"]')


def test_the_worker_folders_hold_no_dockerfile_of_their_own(worker: str) -> None:
    """One Dockerfile for every worker image: nothing to drift apart."""
    assert sorted(p.name for p in (REPO_ROOT / "lambdas" / worker).glob("*Dockerfile*")) == []


def test_hadolint_passes_and_every_ignored_rule_says_why() -> None:
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore" in line:
            assert re.search(r"hadolint ignore=[\w,]+\s+\S", line), f"ignored rule without a reason: {line}"


# ---- the lock -------------------------------------------------------------------------------------

LOCK = REPO_ROOT / "lambdas" / "requirements.lock"
REQUIREMENTS = REPO_ROOT / "lambdas" / "requirements.txt"
#: How the lock marks a release that requirements.txt asks for (the others are its dependencies).
TOP_LEVEL = "-r lambdas/requirements.txt"
SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass
class Locked:
    version: str
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)  # TOP_LEVEL and/or the locked packages that need it


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(text: str) -> dict[str, str]:
    """requirements.txt's ``name==version`` pins by canonical name; anything but an exact pin is an error."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"not pinned: {line}"
            pins[canonical(name.strip())] = version.strip()
    return pins


def parse_lock(text: str) -> dict[str, Locked]:
    """The lock's releases: ``name==version \\``, its ``--hash=`` lines, and its ``# via`` annotations."""
    entries: dict[str, Locked] = {}
    current: Locked | None = None
    for raw in text.splitlines():
        line = raw.strip().removesuffix("\\").strip()
        if not line:
            continue
        if not raw[0].isspace() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), f"not an exact pin: {line}"
            assert re.fullmatch(r"[0-9][0-9A-Za-z.+!]*", version), f"not an exact pin: {line}"
            current = entries.setdefault(canonical(name), Locked(version))
        elif current is None:
            continue  # the header
        elif line.startswith("--hash="):
            current.hashes.append(line.removeprefix("--hash="))
        elif line.startswith("#"):
            via = line.removeprefix("#").strip().removeprefix("via").strip()
            if via:
                current.via.add(via if via.startswith("-r ") else canonical(via))
        else:
            raise AssertionError(f"unexpected line in the lock: {raw}")
    return entries


def disagreements(requirements: dict[str, str], lock: dict[str, Locked]) -> list[str]:
    """Why the lock does not match requirements.txt (empty: it does)."""
    found = []
    for name, version in sorted(requirements.items()):
        if name not in lock:
            found.append(f"{name}=={version} is not in the lock")
        elif lock[name].version != version:
            found.append(f"{name}: requirements.txt pins {version}, the lock {lock[name].version}")
        elif TOP_LEVEL not in lock[name].via:
            found.append(f"{name} is not locked as a requirement of requirements.txt")
    for name, entry in sorted(lock.items()):
        if TOP_LEVEL in entry.via and name not in requirements:
            found.append(f"{name} is locked as a requirement of requirements.txt, which no longer asks for it")
        if not entry.hashes or not all(SHA256.fullmatch(h) for h in entry.hashes):
            found.append(f"{name}: no sha256 hash, or a malformed one: {entry.hashes}")
        unknown = {v for v in entry.via if v != TOP_LEVEL and v not in lock}
        if not entry.via or unknown:
            found.append(f"{name} is needed by nothing in the lock ({sorted(unknown) or 'no via'})")
    # Every locked release is reachable from requirements.txt (no orphan left by a removed requirement).
    needs: dict[str, set[str]] = {}
    for name, entry in lock.items():
        for parent in entry.via:
            needs.setdefault(parent, set()).add(name)
    reachable, todo = set(), [TOP_LEVEL]
    while todo:
        for child in needs.get(todo.pop(), set()) - reachable:
            reachable.add(child)
            todo.append(child)
    found += [f"{name} is not reachable from requirements.txt" for name in sorted(set(lock) - reachable)]
    return found


def test_the_lock_pins_every_requirement_at_its_version_with_hashes_and_nothing_else() -> None:
    requirements = parse_requirements(REQUIREMENTS.read_text())
    lock = parse_lock(LOCK.read_text())
    assert len(requirements) >= 5 and len(lock) > len(requirements), "the lock holds the transitive dependencies too"
    assert disagreements(requirements, lock) == [], "refresh it with `make image-lock`"


def test_a_lock_that_disagrees_with_the_requirements_is_reported() -> None:
    requirements = {"pydantic": "2.14.4", "boto3": "1.44.8"}
    digest = "sha256:" + "a" * 64
    good = f"""# header
pydantic==2.14.4 \\
    --hash={digest}
    # via -r lambdas/requirements.txt
pydantic-core==2.50.5 \\
    --hash={digest}
    # via pydantic
boto3==1.44.8 \\
    --hash={digest}
    # via
    #   -r lambdas/requirements.txt
    #   langchain-aws
"""
    assert disagreements(requirements, parse_lock(good.replace("#   langchain-aws", "#   pydantic"))) == []
    assert disagreements(requirements, parse_lock(good)) == [
        "boto3 is needed by nothing in the lock (['langchain-aws'])"
    ]
    lock = parse_lock(good.replace("#   langchain-aws", "#   pydantic"))
    assert disagreements({**requirements, "pydantic": "2.15.0"}, lock) == [
        "pydantic: requirements.txt pins 2.15.0, the lock 2.14.4"
    ]
    assert disagreements({**requirements, "tenacity": "9.2.1"}, lock) == ["tenacity==9.2.1 is not in the lock"]
    assert disagreements({"pydantic": "2.14.4"}, lock) == [
        "boto3 is locked as a requirement of requirements.txt, which no longer asks for it"
    ]
    orphan = (
        good.replace("#   langchain-aws", "#   pydantic") + f"six==1.17.0 \\\n    --hash={digest}\n    # via jmespath\n"
    )
    assert disagreements(requirements, parse_lock(orphan)) == [
        "six is needed by nothing in the lock (['jmespath'])",
        "six is not reachable from requirements.txt",
    ]
    # Left behind together after their requirement was dropped: they need each other, nothing needs them.
    cycle = orphan + f"jmespath==1.1.0 \\\n    --hash={digest}\n    # via six\n"
    assert disagreements(requirements, parse_lock(cycle)) == [
        "jmespath is not reachable from requirements.txt",
        "six is not reachable from requirements.txt",
    ]
    unhashed = good.replace("#   langchain-aws", "#   pydantic").replace(
        f"--hash={digest}\n    # via pydantic", "# via pydantic"
    )
    assert disagreements(requirements, parse_lock(unhashed)) == [
        "pydantic-core: no sha256 hash, or a malformed one: []"
    ]
    with pytest.raises(AssertionError, match="not an exact pin"):
        parse_lock("pydantic>=2\n")
