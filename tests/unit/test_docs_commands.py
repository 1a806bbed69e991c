"""Every command README.md and docs/*.md show is real.

Commands are the lines of fenced code blocks marked ``bash`` / ``sh`` / ``shell`` / ``console``, and
of unmarked blocks with a line starting with ``$ `` or ``make ``. For each command (``$ `` stripped,
comments dropped, ``\\`` continuations joined):

- ``make <target>``: the target is defined in the Makefile (``VAR=value`` arguments allowed);
- ``python -m <module>``: the module is in the repository (a package needs ``__main__.py``), or
  importable from the test interpreter (``python -m pytest``);
- an argument that is a path inside the repository (``tests/``, ``docs/``, ``receipt_...``, ...)
  exists; globs must match at least one file;
- ``--flags`` given to ``python -m local_pipeline`` / ``receipt_dynamo`` / ``receipt_label`` /
  ``bench`` appear in that module's ``--help`` (and its subcommand's); this runs the modules in
  subprocesses, so those tests are marked ``integration``.

Other commands (``npx cdk``, ``aws``, ``docker``, ``git``, ``export``, ``cd``, ``ollama``, ...) are
checked for repository paths only.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.helpers import REPO_ROOT

DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "shell-session", "zsh"}
#: Arguments starting with one of these are paths inside the repository.
REPO_PATH_PREFIXES = ("tests/", "docs/", "lambdas/", "constructs/", "receipt_", "bench/", "local_pipeline/")
#: ``python -m`` modules whose ``--flags`` are checked against their ``--help``.
HELP_CHECKED_MODULES = ("local_pipeline", "receipt_dynamo", "receipt_label", "bench")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^(?:.*/)?python(?:3(?:\.\d+)?)?$")


@dataclass(frozen=True)
class Command:
    """One command line as a doc shows it; ``where`` is ``file:line`` of its first line."""

    where: str
    text: str

    @property
    def words(self) -> list[str]:
        try:
            return shlex.split(self.text, comments=True)
        except ValueError:  # unbalanced quotes in a shell construct shlex does not know
            return self.text.split("#", 1)[0].split()


def _command_lines(lines: list[tuple[int, str]], language: str) -> list[tuple[int, str]]:
    """The (line number, text) of the commands of one code block; continuation lines joined."""
    console = language in {"console", "shell-session"}  # ``$ `` lines are commands, the rest output
    make_lines = False
    if language not in SHELL_LANGUAGES:
        if language or not any(text.strip().startswith(("$ ", "make ")) for _, text in lines):
            return []
        console = make_lines = True  # an unmarked block: its ``$ `` and ``make `` lines are the commands
    commands: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in lines:
        text = raw.strip()
        if pending is not None:
            text = pending[1] + " " + text
            number = pending[0]
            pending = None
        elif text.startswith("$ "):
            text = text[2:].strip()
        elif console and not (make_lines and text.startswith("make ")):
            continue  # the output of a console session
        if text.endswith("\\"):
            pending = (number, text[:-1].rstrip())
            continue
        if text and not text.startswith("#"):
            commands.append((number, text))
    if pending is not None:
        commands.append(pending)
    return commands


def extract_commands(markdown: str, name: str) -> list[Command]:
    """The shell commands of ``markdown``'s fenced code blocks (see the module docstring)."""
    found: list[Command] = []
    fence: str | None = None
    language = ""
    block: list[tuple[int, str]] = []
    for number, line in enumerate(markdown.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, language, block = match["fence"], match["info"].lower(), []
            continue
        if match and match["fence"].startswith(fence) and not match["info"]:
            found.extend(Command(f"{name}:{n}", text) for n, text in _command_lines(block, language))
            fence = None
            continue
        block.append((number, line))
    return found


def doc_commands() -> list[Command]:
    commands: list[Command] = []
    for path in DOC_FILES:
        commands.extend(extract_commands(path.read_text(encoding="utf-8"), path.relative_to(REPO_ROOT).as_posix()))
    return commands


COMMANDS = doc_commands()


# ---- what a command line says ---------------------------------------------------------------------


def without_assignments(words: list[str]) -> list[str]:
    """``words`` without leading ``VAR=value`` environment assignments."""
    index = 0
    while index < len(words) and _ASSIGNMENT.match(words[index]):
        index += 1
    return words[index:]


def makefile_targets() -> set[str]:
    targets: set[str] = set()
    for line in (REPO_ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.%/-]+(?:[ \t]+[A-Za-z0-9_.%/-]+)*)[ \t]*:(?!=)", line)
        if match:
            targets.update(match[1].split())
    return targets


def make_targets(words: list[str]) -> list[str]:
    """The targets of ``make ...`` (options and ``VAR=value`` arguments skipped)."""
    words = without_assignments(words)
    if not words or words[0] != "make":
        return []
    targets, skip_next = [], False
    for word in words[1:]:
        if skip_next:
            skip_next = False
        elif word in {"-C", "-f", "-I", "-o", "-W"}:
            skip_next = True
        elif not word.startswith("-") and not _ASSIGNMENT.match(word):
            targets.append(word)
    return targets


def python_module(words: list[str]) -> tuple[str, list[str]] | None:
    """``(module, its arguments)`` of ``[VAR=...] python -m module args...``, else None."""
    words = without_assignments(words)
    for index, word in enumerate(words[:-2]):
        if _PYTHON.match(word) and words[index + 1] == "-m":
            return words[index + 2], words[index + 3 :]
    return None


def module_problem(module: str) -> str | None:
    """Why ``python -m module`` would fail, or None."""
    parts = module.split(".")
    base = REPO_ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return None
    if base.is_dir():
        return None if (base / "__main__.py").is_file() else f"{module} is a package without __main__.py"
    if (REPO_ROOT / parts[0]).exists():
        return f"module {module} does not exist in the repository"
    if importlib.util.find_spec(parts[0]) is None:
        return f"module {module} is neither in the repository nor installed"
    return None


def repo_path_arguments(words: list[str]) -> list[str]:
    """The arguments (or ``VAR=`` / ``--flag=`` values) that are paths inside the repository."""
    module = python_module(words)
    skip = module[0] if module else None
    paths = []
    for word in words:
        value = word.split("=", 1)[1] if "=" in word and (word.startswith("-") or _ASSIGNMENT.match(word)) else word
        value = value.strip("[]()'\"")
        if value != skip and value.startswith(REPO_PATH_PREFIXES) and "/" in value:
            paths.append(value)
    return paths


def path_problem(path: str) -> str | None:
    if any(char in path for char in "*?["):
        return None if list(REPO_ROOT.glob(path)) else f"{path} matches no file"
    return None if (REPO_ROOT / path).exists() else f"{path} does not exist"


def bench_module_exists(name: str) -> bool:
    stem = name if name.startswith("bench_") else f"bench_{name}"
    return (REPO_ROOT / "bench" / f"{stem}.py").is_file()


def static_problems(command: Command) -> list[str]:
    words = command.words
    problems: list[str] = []
    targets = makefile_targets()
    problems += [f"make target {t!r} is not in the Makefile" for t in make_targets(words) if t not in targets]
    module = python_module(words)
    if module is not None:
        problem = module_problem(module[0])
        if problem:
            problems.append(problem)
        if module[0] == "bench":  # python -m bench [name ...]: names of bench/bench_<name>.py, no options
            names = [a for a in module[1] if not a.startswith("-")]
            problems += [f"no benchmark {n!r} (bench/bench_{n}.py)" for n in names if not bench_module_exists(n)]
    problems += [p for p in map(path_problem, repo_path_arguments(words)) if p]
    return problems


@functools.cache
def help_text(module: str, subcommand: str | None) -> str:
    """``python -m module [subcommand] --help`` (stdout and stderr)."""
    args = [sys.executable, "-m", module, *([subcommand] if subcommand else []), "--help"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    return result.stdout + result.stderr


def flag_problems(command: Command) -> list[str]:
    module = python_module(command.words)
    if module is None or module[0] not in HELP_CHECKED_MODULES:
        return []
    name, args = module
    flags = [a.strip("[]").split("=", 1)[0] for a in args if a.strip("[]").startswith("--")]
    positional = [a for a in args if not a.startswith(("-", "["))]
    texts = [help_text(name, None)]
    problems = []
    subcommands = re.search(r"usage: .*?\{([A-Za-z0-9_,-]+)\}", texts[0], re.DOTALL)
    if subcommands and positional:
        if positional[0] in subcommands[1].split(","):
            texts.append(help_text(name, positional[0]))
        else:
            problems.append(f"python -m {name} has no subcommand {positional[0]!r} ({{{subcommands[1]}}})")
    known = {flag for text in texts for flag in re.findall(r"--[A-Za-z0-9][A-Za-z0-9-]*", text)}
    return problems + [f"python -m {name} has no option {flag}" for flag in flags if flag not in known]


# ---- tests -----------------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_docs_show_commands() -> None:
    texts = {c.text for c in COMMANDS}
    assert {"make synth", "make test"} <= texts
    assert any(python_module(c.words) for c in COMMANDS)


@pytest.mark.unit
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.where)
def test_command_targets_modules_and_paths_exist(command: Command) -> None:
    problems = static_problems(command)
    assert not problems, f"{command.where}: {command.text}\n  " + "\n  ".join(problems)


FLAG_COMMANDS = [c for c in COMMANDS if (m := python_module(c.words)) and m[0] in HELP_CHECKED_MODULES]


@pytest.mark.integration
@pytest.mark.parametrize("command", FLAG_COMMANDS, ids=lambda c: c.where)
def test_command_flags_exist_in_the_module_help(command: Command) -> None:
    problems = flag_problems(command)
    assert not problems, f"{command.where}: {command.text}\n  " + "\n  ".join(problems)


# ---- the extraction itself ----------------------------------------------------------------------------

SAMPLE = """\
Intro.

```bash
make synth   # a comment
# a whole-line comment
$ .venv/bin/python -m bench cost \\
    --rounds 3
OLLAMA_MODEL=qwen3:8b make run-local RECEIPTS='tests/fixtures/*.json'
```

```console
$ make test
output line
make is not a command here
```

```
$ make lint
some output
```

```
plain text, make me no command
```

```python
import os
```

    ```sh
    npx cdk synth
    ```
"""


@pytest.mark.unit
def test_extraction_of_commands() -> None:
    commands = extract_commands(SAMPLE, "x.md")
    assert [(c.where, c.text) for c in commands] == [
        ("x.md:4", "make synth   # a comment"),
        ("x.md:6", ".venv/bin/python -m bench cost --rounds 3"),
        ("x.md:8", "OLLAMA_MODEL=qwen3:8b make run-local RECEIPTS='tests/fixtures/*.json'"),
        ("x.md:12", "make test"),
        ("x.md:18", "make lint"),
        ("x.md:31", "npx cdk synth"),
    ]
    assert commands[0].words == ["make", "synth"]
    assert make_targets(commands[2].words) == ["run-local"]
    assert python_module(commands[1].words) == ("bench", ["cost", "--rounds", "3"])
    assert repo_path_arguments(commands[2].words) == ["tests/fixtures/*.json"]


@pytest.mark.unit
def test_static_checks_report_what_is_wrong() -> None:
    def problems(text: str) -> list[str]:
        return static_problems(Command("x.md:1", text))

    assert problems("make synth CONTEXT='-c stage=dev'") == []
    assert problems("make no-such-target") == ["make target 'no-such-target' is not in the Makefile"]
    assert problems(".venv/bin/python -m receipt_dynamo load tests/fixtures/*.json") == []
    assert problems("python -m receipt_dynamo.nope") == ["module receipt_dynamo.nope does not exist in the repository"]
    assert problems("python -m pytest tests/unit") == []
    assert problems("cat tests/fixtures/nope.json") == ["tests/fixtures/nope.json does not exist"]
    assert problems("ls docs/*.nope") == ["docs/*.nope matches no file"]
    assert problems("INTEG_APPS=tests/integ/missing.py make integ") == ["tests/integ/missing.py does not exist"]
    assert problems("python -m bench cost bench_dynamo") == []
    assert problems("python -m bench nope") == ["no benchmark 'nope' (bench/bench_nope.py)"]


@pytest.mark.integration
def test_flag_checks_report_what_is_wrong() -> None:
    def problems(text: str) -> list[str]:
        return flag_problems(Command("x.md:1", text))

    assert problems("python -m receipt_dynamo load a.json --table t --create-table") == []
    assert problems("python -m receipt_dynamo load a.json --tabel t") == [
        "python -m receipt_dynamo has no option --tabel"
    ]
    assert problems("python -m receipt_dynamo dump") == ["python -m receipt_dynamo has no subcommand 'dump' ({load})"]
    assert problems("python -m local_pipeline --receipts a.json --no-such-flag") == [
        "python -m local_pipeline has no option --no-such-flag"
    ]
