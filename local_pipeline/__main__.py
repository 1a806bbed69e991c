"""``make run-local`` / ``python -m local_pipeline``: the pipeline on this machine against a real Ollama endpoint.

A moto server on loopback is the DynamoDB-, S3-, Secrets Manager- and Step Functions-compatible
endpoint; the synthesized CreateLabels state machine runs there with the real handlers in this
process, and with ``--validate`` the ValidatePendingLabels one after it, over the same table. Library
and handler log lines (INFO and up) go to ``<results dir>/run.log``, never between the progress
lines; ``--verbose`` shows the handlers' own lines on the terminal too.
Each execution's output and per-receipt results are copied to the results directory (default
``local-run/<execution name>/``), which stays after the moto server is gone.
Exit status: 0 every receipt labeled (and judged); 1 a run finished with failed receipts (or failed);
2 bad arguments or receipt files, no Ollama endpoint answers, or it does not serve the model.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from local_pipeline.template import REPO_ROOT, WORKER_STATES, cdk_json_context

DEFAULT_BASE_URL = "http://localhost:11434"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
PROBE_TIMEOUT_SECONDS = 3.0


class UsageError(Exception):
    """Bad arguments or receipt files: one line on stderr, exit status 2 (before anything slow starts)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local_pipeline", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--receipts",
        nargs="+",
        metavar="FILE",
        help="receipt JSON documents (globs allowed); default: tests/fixtures/*.json",
    )
    parser.add_argument("--base-url", default=os.environ.get("OLLAMA_BASE_URL") or DEFAULT_BASE_URL)
    parser.add_argument("--model", default=os.environ.get("OLLAMA_MODEL") or None, help="default: the stack's model")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per LLM read (OLLAMA_TIMEOUT_SECONDS)")
    parser.add_argument("--template", type=Path, help="a synthesized template to run instead of synthesizing now")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="then run the validation state machine: judge the PENDING labels VALID, INVALID or NEEDS_REVIEW",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the handlers' log lines on the terminal too (they are in run.log)"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path("local-run"),
        help="where the run's results are copied, one folder per execution (default: local-run/)",
    )
    return parser.parse_args(argv)


def receipt_files(patterns: list[str] | None) -> list[Path]:
    if not patterns:
        return sorted(FIXTURES.glob("*.json"))
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise UsageError(f"no file matches {pattern}")
        files.extend(Path(m) for m in matches)
    return files


def load_documents(files: list[Path]) -> list[dict[str, Any]]:
    """Read and validate every document before anything starts; errors name the file and the JSON path."""
    from receipt_dynamo import DocumentValidationError, parse_receipt_document

    documents = []
    for path in files:
        try:
            document = json.loads(path.read_text())
            parse_receipt_document(document)
        except (OSError, json.JSONDecodeError, DocumentValidationError) as error:
            raise UsageError(f"{path}: {error}") from None
        documents.append(document)
    return documents


def default_model() -> str:
    """The model the stack asks for when --model is not given: cdk.json's ``ollama_model``."""
    return str(cdk_json_context().get("ollama_model") or "gpt-oss:120b")


def serves(models: list[str], model: str) -> bool:
    """Ollama lists ``name:tag``; a model asked for without a tag means ``:latest``."""
    return model in models or (":" not in model and f"{model}:latest" in models)


@contextmanager
def logs_to_file(path: Path, *, echo: Iterable[logging.Logger] = ()) -> Iterator[None]:
    """Every log record of the run (handlers, receipt_label, botocore, moto) goes to ``path``, not the terminal;
    the records of the ``echo`` loggers go to stdout as well."""
    path.parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(formatter)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(formatter)
    echoed = list(echo)
    root = logging.getLogger()
    saved, saved_level = list(root.handlers), root.level
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    for logger in echoed:
        logger.addHandler(console)
    try:
        yield
    finally:
        for logger in echoed:
            logger.removeHandler(console)
        root.handlers = saved
        root.setLevel(saved_level)
        handler.close()


def save_results(directory: Path, run: Any) -> Path:
    """Copy the execution's output and its per-receipt results out of the moto server, which stops at the end."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "output.json").write_text(
        json.dumps({"status": run.status, "error": run.error, "cause": run.cause, "output": run.output}, indent=1)
        + "\n"
    )
    (directory / "results.json").write_text(json.dumps(run.results, indent=1, default=str) + "\n")
    return directory


def probe_ollama(base_url: str, api_key: str | None) -> list[str]:
    """The models the endpoint lists (GET /api/tags); raises OSError when nothing answers."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {base_url}")
    request = urllib.request.Request(base_url.rstrip("/") + "/api/tags")  # noqa: S310 - scheme checked above
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_SECONDS) as response:  # noqa: S310
        body = json.loads(response.read() or b"{}")
    return [str(m.get("name") or m.get("model")) for m in body.get("models", []) if isinstance(m, dict)]


#: The execution statuses the stack's EventBridge rule sends to the alarm topic.
ALARM_STATUSES = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})
#: The list Task state of each kind of run (the worker's: local_pipeline.template.WORKER_STATES).
LIST_STATES = {"create": "ListReceipts", "validate": "ListPendingReceipts"}
#: How the summary names each kind of execution.
RUN_TITLES = {"create": "Execution", "validate": "Validation execution"}


def retried_errors(definition: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Task state -> the error names its Retry matches (so a failed attempt can say it will be retried)."""
    from local_pipeline.template import iter_states

    return {
        state["_name"]: frozenset(name for retrier in state.get("Retry", []) for name in retrier["ErrorEquals"])
        for state in iter_states(definition)
        if state.get("Type") == "Task"
    }


class Progress:
    """One line per attempt as its Lambda invocation ends; the counter counts receipts, not attempts.

    A receipt keeps the number it got on its first attempt, so a retried attempt shows the same
    ``[n/total]`` and says that it will be retried. The list state's count replaces ``total``.
    """

    def __init__(self, total: int, out: TextIO, retried: dict[str, frozenset[str]] | None = None) -> None:
        self.total, self.out, self.done = total, out, 0
        self.retried = retried or {}
        self.numbers: dict[str, int] = {}
        self._lock = threading.Lock()

    def _failed(self, invocation: Any) -> str:
        """``FAILED`` for an error no retrier matches, ``failed (retried)`` for one the state machine retries."""
        retryable = invocation.error_type in self.retried.get(invocation.state, frozenset())
        return "failed (retried)" if retryable else "FAILED"

    def __call__(self, invocation: Any) -> None:
        with self._lock:
            if invocation.state == "Preflight":
                if invocation.ok:
                    r = invocation.result
                    print(
                        f"Preflight: {r['base_url']} accepts the key and serves {r['model']} "
                        f"({r['llm_calls']} LLM call, {invocation.seconds:.1f} s)",
                        file=self.out,
                        flush=True,
                    )
                else:
                    message = (invocation.error_message or "").strip()
                    print(
                        f"Preflight {self._failed(invocation)}: {invocation.error_type}: {message}",
                        file=self.out,
                        flush=True,
                    )
                return
            if invocation.state in LIST_STATES.values():
                if invocation.ok:
                    result = invocation.result
                    self.total = result["receipt_count"]
                    print(
                        f"{invocation.state}: {result['receipt_count']} receipts -> "
                        f"s3://{result['manifest_bucket']}/{result['manifest_key']}",
                        file=self.out,
                        flush=True,
                    )
                else:
                    message = f"{invocation.error_type}: {invocation.error_message}"
                    print(f"{invocation.state} FAILED: {message}", file=self.out, flush=True)
                return
            event = invocation.event
            key = f"{event.get('image_id')}#{event.get('receipt_id')}"
            if key not in self.numbers:
                self.done += 1
                self.numbers[key] = self.done
            prefix = f"[{self.numbers[key]:>{len(str(self.total))}}/{self.total}] {key}"
            if invocation.ok:
                what = outcome_text(invocation.state, invocation.result)
                print(f"{prefix}  ok      {what} ({invocation.seconds:.1f} s)", file=self.out, flush=True)
            else:
                message = (invocation.error_message or "").splitlines()[0][:160] if invocation.error_message else ""
                status = self._failed(invocation)
                print(f"{prefix}  {status}  {invocation.error_type}: {message}", file=self.out, flush=True)


def _calls(count: int) -> str:
    return f"{count} LLM call{'s' if count != 1 else ''}"


def outcome_text(state: str, r: dict[str, Any]) -> str:
    """What one receipt's worker result says, in a progress line."""
    if state == WORKER_STATES["validate"]:
        if not r["labels_pending"]:
            return "no PENDING label of this pipeline: skipped, no LLM call"
        return (
            f"{r['labels_pending']} labels judged: {r['labels_valid']} VALID, {r['labels_invalid']} INVALID, "
            f"{r['labels_needs_review']} NEEDS_REVIEW, {r['labels_skipped_changed']} skipped (changed), "
            f"{_calls(r['llm_calls'])}"
        )
    if r.get("already_labeled"):
        return "already labeled by this pipeline: skipped, no LLM call"
    return (
        f"{r['labels_added']} labels added, {r['labels_skipped_existing']} existing kept, "
        f"{r['labels_rejected']} rejected, {_calls(r['llm_calls'])}"
    )


def _render(rows: list[tuple[str, ...]], left: set[int]) -> str:
    """Rows as columns (the first row the header, the last the totals, each under a rule)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in pairs]
        lines.append("  ".join(cells).rstrip())
        if index == 0 or index == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _last_attempts(run: Any, state: str) -> dict[tuple[str, int], Any]:
    """Receipt key -> its last ``state`` invocation (the results files are not written when the map run fails,
    e.g. above the tolerated failure percentage)."""
    return {(i.event.get("image_id"), i.event.get("receipt_id")): i for i in run.invocations_of(state)}


def _result_text(invocation: Any) -> str:
    if invocation is None:
        return "not run"
    return "ok" if invocation.ok else f"FAILED {invocation.error_type}"


def validation_table(keys: list[tuple[str, int]], run: Any) -> str:
    """One row per receipt: the labels judged VALID, INVALID, NEEDS_REVIEW, skipped, and the LLM calls."""
    attempts = _last_attempts(run, WORKER_STATES["validate"])
    columns = ("labels_pending", "labels_valid", "labels_invalid", "labels_needs_review", "labels_skipped_changed")
    rows: list[tuple[str, ...]] = [
        ("receipt", "judged", "VALID", "INVALID", "NEEDS_REVIEW", "skipped", "LLM calls", "result")
    ]
    totals: Counter[str] = Counter()
    for image_id, receipt_id in keys:
        invocation = attempts.get((image_id, receipt_id))
        result = invocation.result if invocation is not None and invocation.ok else {}
        counts = [int(result.get(c, 0)) for c in (*columns, "llm_calls")]
        totals.update(dict(zip((*columns, "llm_calls"), counts, strict=True)))
        cells = [str(c) for c in counts] if result else ["-"] * len(counts)
        outcome = _result_text(invocation) if invocation is not None else "not judged"
        rows.append((f"{image_id}#{receipt_id}", *cells, outcome))
    rows.append(("total", *(str(totals[c]) for c in (*columns, "llm_calls")), ""))
    return _render(rows, {0, 7})


def summary_table(pipeline: Any, keys: list[tuple[str, int]], run: Any) -> str:
    """One row per receipt: its words, its labels by status in the table, and its last attempt's outcome."""
    attempts = _last_attempts(run, WORKER_STATES["create"])
    store = pipeline.dynamo()
    rows: list[tuple[str, ...]] = [("receipt", "words", "PENDING", "VALID", "other", "result")]
    totals: Counter[str] = Counter()
    for image_id, receipt_id in keys:
        details = store.get_receipt_details(image_id, receipt_id)
        statuses = Counter(label.validation_status.value for label in details.labels)
        pending, valid = statuses.pop("PENDING", 0), statuses.pop("VALID", 0)
        other = sum(statuses.values())
        totals.update({"words": len(details.words), "PENDING": pending, "VALID": valid, "other": other})
        result = _result_text(attempts.get((image_id, receipt_id)))
        rows.append((f"{image_id}#{receipt_id}", str(len(details.words)), str(pending), str(valid), str(other), result))
    rows.append(("total", *(str(totals[k]) for k in ("words", "PENDING", "VALID", "other")), ""))
    return _render(rows, {0, 5})


def execution_line(run: Any) -> str:
    """``Execution SUCCEEDED: 8 succeeded, 0 failed of 8`` (or the error and cause of a failed execution)."""
    head = f"{RUN_TITLES[run.kind]} {run.status}"
    if run.output:
        counts = run.output
        return f"{head}: {counts['succeeded']} succeeded, {counts['failed']} failed of {counts['receipt_count']}"
    return f"{head}: {run.error}: {(run.cause or '')[:300]}"


#: Called with (pipeline, receipt keys, run) once the last run ended, while the local table still exists.
AfterRun = Callable[[Any, list[tuple[str, int]], Any], None]


def run_once(pipeline: Any, kind: str, keys: list[tuple[str, int]], args: argparse.Namespace, out: TextIO) -> Any:
    """One execution of the ``kind`` state machine with progress lines, its summary, and its results saved."""
    machine = pipeline.machine(kind)
    progress = Progress(len(keys), out, retried_errors(machine.definition))
    pipeline.router.listeners.append(progress)
    suffix = "" if kind == "create" else f"-{kind}"
    execution_name = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}{suffix}"
    results_dir = args.results_dir / execution_name
    try:
        with logs_to_file(results_dir / "run.log", echo=pipeline.handler_loggers if args.verbose else ()):
            run = pipeline.run(name=execution_name, kind=kind)
    finally:
        pipeline.router.listeners.remove(progress)
    print("", file=out)
    print(summary_table(pipeline, keys, run) if kind == "create" else validation_table(keys, run), file=out)
    print("", file=out)
    print(execution_line(run), file=out)
    copied = save_results(results_dir, run)
    print(f"Results: {copied} (output.json, results.json, run.log)", file=out)
    if run.status in ALARM_STATUSES:
        print(
            f"Deployed, this run would raise the stack's alarm: execution {run.status} is sent to the "
            "alarm topic (output AlarmTopicArn).",
            file=out,
        )
    return run


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, *, after_run: AfterRun | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    api_key = os.environ.get("OLLAMA_API_KEY") or None
    try:
        documents = load_documents(receipt_files(args.receipts))
        if args.template is not None and not args.template.is_file():
            raise UsageError(f"--template {args.template}: no such file (write one with make synth: cdk.out/)")
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    print(f"Ollama endpoint: {args.base_url}", file=out, flush=True)
    try:
        models = probe_ollama(args.base_url, api_key)
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        print(
            f"error: no Ollama endpoint answers at {args.base_url} ({reason}).\n"
            "Start one (`ollama serve`, then `ollama pull <model>`), or point OLLAMA_BASE_URL at one "
            "(e.g. OLLAMA_BASE_URL=https://ollama.com with OLLAMA_API_KEY set).",
            file=sys.stderr,
        )
        return 2
    wanted = args.model or default_model()
    if models and not serves(models, wanted):
        print(
            f"error: {args.base_url} does not serve model {wanted!r}; it serves: {', '.join(sorted(models))}.\n"
            f"Pull it there (`ollama pull {wanted}`) or pick a served one with --model (or OLLAMA_MODEL).",
            file=sys.stderr,
        )
        return 2

    # Everything AWS goes to the local moto server: fake credentials, a fixed region.
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(variable, None)

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    from local_pipeline.harness import LocalPipeline
    from local_pipeline.template import load_template, synthesize_template

    started = time.perf_counter()
    if args.template:
        template = load_template(args.template)
        print(f"Template: {args.template}", file=out, flush=True)
    else:
        print("Synthesizing the CDK app (about 15 s) ...", file=out, end="", flush=True)
        synth_started = time.perf_counter()
        template = synthesize_template()
        print(f" done in {time.perf_counter() - synth_started:.0f} s", file=out, flush=True)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    print(f"moto server (DynamoDB, S3, Secrets Manager, Step Functions): {endpoint}", file=out, flush=True)
    try:
        with LocalPipeline(
            template,
            ollama_base_url=args.base_url,
            ollama_model=args.model,
            ollama_api_key=api_key,
            ollama_timeout_seconds=args.timeout,
            endpoint_url=endpoint,
            handler_log_level="INFO",
        ) as pipeline:
            keys = pipeline.load_receipts(documents)
            model = pipeline.environment.get("OLLAMA_MODEL", "?")
            print(
                f"Table {pipeline.table_name}: {len(keys)} receipts loaded; model {model}; "
                f"state machine {pipeline.state_machine_arn.rsplit(':', 1)[-1]}",
                file=out,
                flush=True,
            )
            runs: list[Any] = []
            for kind in ("create", "validate") if args.validate else ("create",):
                if runs:
                    if runs[-1].status != "SUCCEEDED":
                        print(f"\nValidation not run: the labeling execution {runs[-1].status}.", file=out)
                        break
                    machine = pipeline.machine(kind)
                    print(
                        f"\nValidating the PENDING labels: state machine {machine.arn.rsplit(':', 1)[-1]}",
                        file=out,
                        flush=True,
                    )
                runs.append(run_once(pipeline, kind, keys, args, out))
            if after_run is not None:
                after_run(pipeline, keys, runs[-1])
            print(
                f"{sum(len(r.history) for r in runs)} events in the execution histories; "
                f"{time.perf_counter() - started:.1f} s in all",
                file=out,
            )
            ok = all(run.status == "SUCCEEDED" and not run.failed_results for run in runs)
            return 0 if ok else 1
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
