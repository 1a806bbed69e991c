"""``make diff`` / ``python -m local_pipeline.review_diff``: review a change, with or without AWS.

With AWS credentials and neither ``--base`` nor ``--template``: ``cdk diff`` against the deployed stack.
Otherwise the working tree against a locally synthesized base (``--base REF``, default ``main``) or a
template (``--template FILE``): ``cdk diff --template``, then the state machine definitions as a JSON
diff (docs/deploying.md). Extra arguments (``-c key=value``) are CDK context for both sides.
Exit status: 0 the comparison ran (differences or not); 2 bad arguments, a base that does not
synthesize, or no credentials with ``--require-credentials`` (used by ``make deploy``).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from local_pipeline.template import REPO_ROOT, STATE_MACHINE_TYPE

DEFAULT_BASE = "main"
CREDENTIALS_TIMEOUT_SECONDS = 3.0
CDK = ["npx", "--no-install", "cdk"]
NEEDS_CREDENTIALS = (
    "error: make deploy needs AWS credentials: set AWS_PROFILE=<profile>, run `aws configure`, "
    "or `aws sso login --profile <profile>`, then run make deploy again."
)


class ReviewError(RuntimeError):
    """The base or the working tree cannot be synthesized or read."""


def have_credentials(timeout: float = CREDENTIALS_TIMEOUT_SECONDS) -> bool:
    """True when boto3 finds credentials and STS accepts them (instance metadata is not asked)."""
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    try:
        import boto3
        from botocore.config import Config

        session = boto3.Session()
        if session.get_credentials() is None:
            return False
        config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
        sts = session.client("sts", region_name=session.region_name or "us-east-1", config=config)
        sts.get_caller_identity()
    except Exception:
        return False
    return True


def context_json(repo_dir: Path, extra: list[str]) -> str:
    """The context ``cdk`` would give the app: ``repo_dir``'s cdk.json context plus ``-c key=value`` arguments."""
    context: dict[str, Any] = dict(json.loads((repo_dir / "cdk.json").read_text()).get("context", {}))
    args = iter(extra)
    for arg in args:
        if arg in ("-c", "--context"):
            pair = next(args, "")
        elif arg.startswith("--context="):
            pair = arg.split("=", 1)[1]
        else:
            raise ReviewError(f"unexpected argument {arg!r} (only -c key=value context is passed on)")
        key, sep, value = pair.partition("=")
        if not sep:
            raise ReviewError(f"context must be key=value, got {pair!r}")
        context[key] = value
    return json.dumps(context)


def synthesize(repo_dir: Path, outdir: Path, extra: list[str]) -> Path:
    """Run ``repo_dir``'s app.py (its own constructs) with this interpreter into ``outdir``; the stack template."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CDK_CONTEXT_JSON")}
    env.update(
        {
            "CDK_OUTDIR": str(outdir),
            "CDK_CONTEXT_JSON": context_json(repo_dir, extra),
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": env.get(
                "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20"
            ),
        }
    )
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=repo_dir, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise ReviewError(f"synthesizing {repo_dir} failed (exit {result.returncode}):\n{tail}")
    templates = sorted(outdir.glob("*.template.json"))
    if len(templates) != 1:
        raise ReviewError(f"expected one stack template in {outdir}, found {[t.name for t in templates]}")
    return templates[0]


@contextmanager
def git_worktree(ref: str) -> Iterator[Path]:
    """A detached worktree of ``ref`` in a temporary directory, removed afterwards (also on failure)."""
    tmp = Path(tempfile.mkdtemp(prefix="review-diff-"))
    tree = tmp / "tree"
    added = subprocess.run(  # noqa: S603
        ["git", "worktree", "add", "--detach", "--quiet", str(tree), ref],  # noqa: S607
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        if added.returncode != 0:
            raise ReviewError(f"git worktree add {ref} failed: {added.stderr.strip()}")
        yield tree
    finally:
        if added.returncode == 0:
            subprocess.run(  # noqa: S603
                ["git", "worktree", "remove", "--force", str(tree)],  # noqa: S607
                cwd=REPO_ROOT,
                capture_output=True,
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO_ROOT, capture_output=True, check=False)  # noqa: S607


# -- readable state machine definitions ---------------------------------------------------------------


def render_token(value: Any) -> str:
    """A CloudFormation reference inside a definition, as ``${LogicalId}`` or ``${LogicalId.Attr}``."""
    if isinstance(value, dict) and list(value) == ["Ref"]:
        return "${" + str(value["Ref"]) + "}"
    if isinstance(value, dict) and list(value) == ["Fn::GetAtt"]:
        attr = value["Fn::GetAtt"]
        return "${" + (".".join(attr) if isinstance(attr, list) else str(attr)) + "}"
    return "${" + json.dumps(value, sort_keys=True) + "}"


def definition_of(resource: dict[str, Any]) -> Any:
    """The parsed definition of an ``AWS::StepFunctions::StateMachine`` resource (None when it has none)."""
    properties = resource.get("Properties", {})
    if "Definition" in properties:
        return properties["Definition"]
    value = properties.get("DefinitionString")
    if value is None:
        return None
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        value = separator.join(p if isinstance(p, str) else render_token(p) for p in parts)
    elif not isinstance(value, str):
        value = render_token(value)
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def state_machines(template: dict[str, Any]) -> dict[str, Any]:
    return {
        logical_id: definition_of(resource)
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == STATE_MACHINE_TYPE
    }


def pretty(definition: Any) -> list[str]:
    if definition is None:
        return []
    return (json.dumps(definition, indent=2, sort_keys=True) + "\n").splitlines(keepends=True)


def definition_diffs(base: dict[str, Any], current: dict[str, Any], base_label: str) -> str:
    """Unified diffs of the pretty-printed state machine definitions (pairs one renamed machine by itself)."""
    old, new = state_machines(base), state_machines(current)
    pairs: list[tuple[str | None, str | None]] = [(k, k) for k in old if k in new]
    only_old, only_new = [k for k in old if k not in new], [k for k in new if k not in old]
    if len(only_old) == 1 and len(only_new) == 1:
        pairs.append((only_old[0], only_new[0]))
    else:
        pairs += [(k, None) for k in only_old] + [(None, k) for k in only_new]
    chunks: list[str] = []
    for old_id, new_id in pairs:
        before = pretty(old[old_id]) if old_id else []
        after = pretty(new[new_id]) if new_id else []
        diff = "".join(
            difflib.unified_diff(
                before,
                after,
                fromfile=f"{base_label}: {old_id or '(none)'}",
                tofile=f"working tree: {new_id or '(none)'}",
            )
        )
        name = new_id or old_id
        chunks.append(diff if diff else f"State machine {name}: definition unchanged\n")
    if not chunks:
        return "No state machine in either template.\n"
    return "".join(chunks)


def cdk_diff(base_template: Path, app: Path, out: TextIO) -> int:
    """``cdk diff --template`` of the synthesized assembly ``app`` against ``base_template`` (no AWS calls)."""
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true", CDK_DISABLE_VERSION_CHECK="1")
    env.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    command = [*CDK, "diff", "--template", str(base_template), "--app", str(app), "--no-version-reporting"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    text = (result.stdout + result.stderr).rstrip()
    if text:
        print(text, file=out, flush=True)
    return result.returncode


def compare_locally(base_label: str, base_template: Path, current_dir: Path, out: TextIO) -> None:
    print(f"cdk diff --template {base_label} (the working tree's changes):", file=out, flush=True)
    code = cdk_diff(base_template, current_dir, out)
    if code not in (0, 1):
        print(f"(cdk diff exited {code})", file=out)
    print("", file=out)
    print("State machine definitions (pretty-printed, references as ${LogicalId}):", file=out)
    current_template = next(current_dir.glob("*.template.json"))
    base = json.loads(base_template.read_text())
    current = json.loads(current_template.read_text())
    print(definition_diffs(base, current, base_label), file=out, end="", flush=True)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m local_pipeline.review_diff", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--base", metavar="REF", help=f"git ref to compare with (default without AWS: {DEFAULT_BASE})")
    group.add_argument("--template", metavar="FILE", type=Path, help="a synthesized template to compare with")
    parser.add_argument("--require-credentials", action="store_true", help="exit 2 with one line without credentials")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, *, credentials: bool | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    has_credentials = have_credentials() if credentials is None else credentials
    if args.require_credentials:
        if not has_credentials:
            print(NEEDS_CREDENTIALS, file=sys.stderr)
            return 2
        return 0
    if has_credentials and args.base is None and args.template is None:
        print(">> cdk diff against the deployed stack", file=out, flush=True)
        return subprocess.run([*CDK, "diff", *extra], cwd=REPO_ROOT, check=False).returncode  # noqa: S603

    if args.template is not None:
        base_label = str(args.template)
        if not args.template.is_file():
            print(f"error: no template file {args.template}", file=sys.stderr)
            return 2
    else:
        base_label = args.base or DEFAULT_BASE
    if has_credentials:
        print(f"Comparing the working tree with {base_label} (synthesized locally).", file=out, flush=True)
    else:
        print(
            f"No AWS credentials: comparing the working tree with {base_label} (synthesized locally); "
            "with credentials make diff compares with the deployed stack.",
            file=out,
            flush=True,
        )
    try:
        with tempfile.TemporaryDirectory(prefix="review-diff-out-") as tmp:
            current_dir = Path(tmp) / "current"
            synthesize(REPO_ROOT, current_dir, extra)
            if args.template is not None:
                base_template = args.template.resolve()
                compare_locally(base_label, base_template, current_dir, out)
            else:
                with git_worktree(base_label) as tree:
                    base_template = synthesize(tree, Path(tmp) / "base", extra)
                    compare_locally(base_label, base_template, current_dir, out)
    except ReviewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
