"""Mutation testing of the core modules (``make mutation``): mutmut per group, only the tests that cover it.

Each group runs mutmut in its own scratch copy of the tree (under the system's temporary directory), so
the working tree is never touched. The score of every group and every surviving mutant (with its diff) go to
``mutation-report/report.md`` and ``report.json`` (a ``--group`` run replaces that group's part and keeps the
others). docs/mutation-testing.md explains how to read them.

    python -m tests.mutation                    # every group
    python -m tests.mutation --group data-client # one group (repeatable)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO_ROOT

REPORT_DIR = REPO_ROOT / "mutation-report"
MUTMUT = [sys.executable, "-m", "mutmut"]


@dataclass(frozen=True)
class Group:
    """Modules mutated together and the test files that may kill their mutants."""

    name: str
    modules: tuple[str, ...]
    tests: tuple[str, ...]
    #: mutmut mutant-name globs to run (default: all of the modules' mutants)
    only: tuple[str, ...] = ()
    #: tests that read the source text itself (they fail on any rewritten file, mutated or not)
    deselect: tuple[str, ...] = ()
    #: 1 where tests drive the jsii kernel (one Node process per test session, not fork-safe in parallel)
    max_children: int | None = None
    #: Run every test of the group against every mutant. mutmut credits a function to the tests that call it,
    #: and code run while building a module- or session-scoped fixture (a synthesized template) is credited
    #: to the first test that asked for the fixture only.
    every_test: bool = False


GROUPS: tuple[Group, ...] = (
    Group(
        "data-entities",
        ("receipt_dynamo/entities.py",),
        (
            "tests/unit/test_dynamo_entities.py",
            "tests/unit/test_dynamo_document.py",
            "tests/unit/test_dynamo_validations.py",
        ),
        deselect=("tests/unit/test_dynamo_entities.py::test_runtime_modules_import_only_stdlib_and_boto3",),
    ),
    Group(
        "data-client",
        ("receipt_dynamo/client.py",),
        (
            "tests/unit/test_dynamo_requests.py",
            "tests/unit/test_dynamo_errors.py",
            "tests/unit/test_dynamo_validations.py",
            "tests/integration/test_dynamo_client.py",
        ),
    ),
    Group(
        "labeling",
        (
            "receipt_label/chat_graph.py",
            "receipt_label/graph.py",
            "receipt_label/validation.py",
            "receipt_label/answer.py",
            "receipt_label/errors.py",
        ),
        (
            "tests/unit/test_label_graph.py",
            "tests/unit/test_label_validation.py",
            "tests/unit/test_label_config.py",
            "tests/unit/test_label_budget.py",
            "tests/unit/test_label_prompts.py",
            "tests/unit/test_validate_judging.py",
        ),
    ),
    Group(
        "process-handler",
        (
            "receipt_label/pipeline.py",
            "receipt_label/lambda_wiring.py",
            "lambdas/process_receipt/handler.py",
            "lambdas/validate_labels/handler.py",
        ),
        (
            "tests/unit/test_receipt_pipeline.py",
            "tests/unit/test_validate_pipeline.py",
            "tests/unit/test_handler_process_receipt.py",
            "tests/unit/test_handler_validate_labels.py",
            "tests/unit/test_lambda_wiring.py",
            "tests/unit/test_log_convention.py",
        ),
    ),
    Group(
        "build-context",
        ("constructs/docker_build_context.py",),
        ("tests/unit/test_codebuild_docker_image_context.py",),
        every_test=True,  # its tests share module-scoped build contexts
    ),
    Group(
        "build-trigger",
        ("lambdas/image_build_trigger/handler.py",),
        ("tests/unit/test_codebuild_docker_image_trigger.py",),
    ),
    Group(
        "state-machine-settings",
        ("constructs/labeling_state_machine.py",),
        ("tests/unit/test_step_function_definition.py", "tests/unit/test_faults_state_machine.py"),
        # The retry and threshold settings only: every mutant here costs two syntheses.
        only=tuple(
            f"constructs.labeling_state_machine.*{function}__mutmut_*"
            for function in (
                "x__add_retry",
                "x__add_worker_function_retries",
                "MapLimitsǁ__post_init__",
                "_receipts_map",
            )
        ),
        max_children=1,
        every_test=True,
    ),
)


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _scratch_copy(group: Group) -> Path:
    """The tracked (and new, unignored) files of the tree, copied to the group's own directory."""
    work = Path(tempfile.gettempdir()) / "receipt-labeling-mutation" / group.name
    shutil.rmtree(work, ignore_errors=True)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    for name in listed:
        source = REPO_ROOT / name
        if not source.is_file():
            continue
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    roots = sorted({m.split("/")[0] for m in group.modules})
    copied = sorted({p.split("/")[0] for p in listed if "/" in p} - set(roots) - {"tests"})
    copied += sorted(p for p in listed if "/" not in p and p.endswith((".py", ".json")))
    args = ["-p", "no:cacheprovider", "-q", "-x"]
    for test in group.deselect:
        args += ["--deselect", test]
    config = "\n".join(
        [
            "",
            "[tool.mutmut]",
            f"source_paths = {_toml_list(roots)}",
            f"only_mutate = {_toml_list(list(group.modules))}",
            f"also_copy = {_toml_list(copied)}",
            f"pytest_add_cli_args_test_selection = {_toml_list(list(group.tests))}",
            f"pytest_add_cli_args = {_toml_list(args)}",
            "use_git_change_detection = false",
            "",
        ]
    )
    pyproject = work / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + config)
    return work


#: Prints the diff of each mutant named on stdin (one process instead of one ``mutmut show`` per mutant).
_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
names = json.load(sys.stdin)
print(json.dumps({name: get_diff_for_mutant(name, path=find_mutant(name).path) for name in names}))
"""


def _is_text_only(diff: str) -> bool:
    """True when the mutant changes nothing but the text inside string literals (a message, a log line)."""
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    if len(removed) != len(added) or not removed:
        return False
    strip = re.compile(r"""(?:[rbfu]{0,2})("[^"\\]*(?:\\.[^"\\]*)*"|'[^'\\]*(?:\\.[^'\\]*)*')""", re.I)
    return all(strip.sub('""', a) == strip.sub('""', b) for a, b in zip(removed, added, strict=True))


def _credit_every_test(work: Path, env: dict[str, str], group: Group) -> None:
    """Collect mutmut's test statistics, then credit every function with every test that ran."""
    # mutmut generates the mutants and collects the statistics before it looks for the mutants it was asked
    # for; asked for none that exists, it stops right there (with an error that is expected here).
    subprocess.run([*MUTMUT, "run", "statistics-only"], cwd=work, env=env, capture_output=True, check=False)
    stats_file = work / "mutants" / "mutmut-stats.json"
    if not stats_file.is_file():
        raise RuntimeError(f"mutmut collected no test statistics in {work}")
    stats = json.loads(stats_file.read_text())
    every = sorted(stats["duration_by_test"])
    stats["tests_by_mangled_function_name"] = {name: every for name in stats["tests_by_mangled_function_name"]}
    stats_file.write_text(json.dumps(stats))


def run_group(group: Group) -> dict[str, object]:
    """Run mutmut for ``group`` in its scratch copy; its counts and surviving mutants."""
    work = _scratch_copy(group)
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "PYTHONDONTWRITEBYTECODE": "1"}
    command = [*MUTMUT, "run", *group.only]
    if group.max_children:
        command += ["--max-children", str(group.max_children)]
    started = time.monotonic()
    if group.every_test:
        _credit_every_test(work, env, group)
    run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if run.returncode != 0:
        tail = "\n".join((run.stdout + run.stderr).splitlines()[-30:])
        return {"group": group.name, "error": f"mutmut run exited {run.returncode}", "output": tail}
    listing = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=work, env=env, capture_output=True, text=True, check=True
    ).stdout
    statuses: dict[str, str] = {}
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            statuses[name] = status
    if group.only:
        patterns = [re.compile(re.escape(p).replace(r"\*", ".*") + "$") for p in group.only]
        statuses = {n: s for n, s in statuses.items() if any(p.match(n) for p in patterns)}
    names = sorted(n for n, s in statuses.items() if s in {"survived", "no tests"})
    diffs = subprocess.run(
        [sys.executable, "-c", _DIFFS],
        cwd=work,
        env=env,
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    survivors = [
        {"name": name, "status": statuses[name], "text_only": _is_text_only(diff), "diff": diff}
        for name, diff in json.loads(diffs).items()
    ]
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    scored = len(statuses) - counts.get("skipped", 0)
    logic = [s for s in survivors if not s["text_only"]]
    return {
        "group": group.name,
        "modules": list(group.modules),
        "tests": list(group.tests),
        "seconds": round(seconds),
        "counts": counts,
        "mutants": len(statuses),
        "score": round(100 * killed / scored, 1) if scored else None,
        "score_without_text": round(100 * killed / (scored - (len(survivors) - len(logic))), 1) if scored else None,
        "survivors": survivors,
    }


def write_report(results: list[dict[str, object]]) -> Path:
    REPORT_DIR.mkdir(exist_ok=True)
    (REPORT_DIR / "report.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Mutation testing report",
        "",
        "| group | mutants | killed % | killed % (text mutants aside) | survived (logic / text) | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['group']} | error: {r['error']} | | | | |")
            continue
        survivors = r["survivors"]
        assert isinstance(survivors, list)
        logic = sum(1 for s in survivors if not s["text_only"])
        lines.append(
            f"| {r['group']} | {r['mutants']} | {r['score']} | {r['score_without_text']} | "
            f"{logic} / {len(survivors) - logic} | {r['seconds']} |"
        )
    for r in results:
        lines += ["", f"## {r['group']}", ""]
        if "error" in r:
            lines += ["```", str(r.get("output", "")), "```"]
            continue
        survivors = r["survivors"]
        assert isinstance(survivors, list)
        for s in survivors:
            if not s["text_only"]:
                lines += [f"### {s['name']} ({s['status']})", "", "```diff", s["diff"].strip(), "```", ""]
        text = [s["name"] for s in survivors if s["text_only"]]
        if text:
            lines += [f"Text-only survivors ({len(text)}): " + ", ".join(text), ""]
    report = REPORT_DIR / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", action="append", choices=[g.name for g in GROUPS], help="run only this group")
    args = parser.parse_args(argv)
    chosen = [g for g in GROUPS if not args.group or g.name in args.group]
    results = []
    for group in chosen:
        print(f">> mutmut: {group.name} ({', '.join(group.modules)})", flush=True)
        result = run_group(group)
        results.append(result)
        if "error" in result:
            print(f"   {result['error']}\n{result['output']}", flush=True)
        else:
            print(f"   {result['mutants']} mutants, {result['score']}% killed, {result['seconds']} s", flush=True)
    report = write_report(_with_earlier_groups(results))
    print(f">> report: {report.relative_to(REPO_ROOT)}")
    return 1 if any("error" in r for r in results) else 0


def _with_earlier_groups(results: list[dict[str, object]]) -> list[dict[str, object]]:
    """``results`` plus the last report's groups that were not run this time (``--group``), in GROUPS order."""
    earlier: dict[str, dict[str, object]] = {}
    saved = REPORT_DIR / "report.json"
    if saved.is_file():
        earlier = {str(r["group"]): r for r in json.loads(saved.read_text()) if "group" in r}
    earlier.update({str(r["group"]): r for r in results})
    return [earlier[g.name] for g in GROUPS if g.name in earlier]


if __name__ == "__main__":
    raise SystemExit(main())
