"""``make run-local`` (``python -m local_pipeline``) as a user runs it, against the loopback Ollama server.

The CLI runs in a subprocess (its own moto server on loopback); the synthesized template is passed
with ``--template`` so the test does not synthesize twice.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from local_pipeline.demo import stand_in_judgement, stand_in_label, stand_in_responder
from tests.helpers import REPO_ROOT
from tests.ollama_server import (
    OllamaServer,
    RecordedRequest,
    ScriptedResponse,
    label_words_responder,
    words_in_prompt,
)

pytestmark = pytest.mark.integration

FIXTURES = sorted((REPO_ROOT / "tests" / "fixtures").glob("*.json"))


def run_cli(
    *args: str, base_url: str, api_key: str | None = None, results_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OLLAMA_"))}
    env["OLLAMA_BASE_URL"] = base_url
    if api_key is not None:
        env["OLLAMA_API_KEY"] = api_key
    results = ["--results-dir", str(results_dir or Path(tempfile.mkdtemp(prefix="local-run-")))]
    if "--model" not in args:  # the loopback server serves only this one; the stack's default is not served
        results += ["--model", "loopback-model"]
    return subprocess.run(
        [sys.executable, "-m", "local_pipeline", *args, *results],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def template_file(synthesized: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.json"
    path.write_text(json.dumps(synthesized.stacks[0].template))
    return path


def test_run_local_labels_every_receipt_and_prints_a_summary(ollama_server: OllamaServer, template_file: Path) -> None:
    ollama_server.responder = label_words_responder(lambda text: "PRODUCT_NAME" if text.isalpha() else None)

    key = "olk-run-local-test-key-do-not-print"

    result = run_cli(
        "--template", str(template_file), "--model", "loopback-model", base_url=ollama_server.url, api_key=key
    )

    assert result.returncode == 0, result.stdout + result.stderr
    # The key went through the local Secrets Manager to the handler, as deployed, and is never printed.
    assert {r.headers.get("authorization") for r in ollama_server.chat_requests} == {f"Bearer {key}"}
    assert key not in result.stdout + result.stderr
    out = result.stdout
    image_ids = [json.loads(path.read_text())["image_id"] for path in FIXTURES]
    for image_id in image_ids:
        progress = [line for line in out.splitlines() if line.startswith("[") and f"{image_id}#1" in line]
        assert len(progress) == 1 and " ok " in progress[0] and "1 LLM call" in progress[0], progress
        summary = [line for line in out.splitlines() if line.startswith(f"{image_id}#1")]
        assert len(summary) == 1
        words, pending, valid, other, outcome = summary[0].split()[1:]
        assert int(words) >= int(pending) > 0 and (valid, other, outcome) == ("0", "0", "ok")
    assert f"Execution SUCCEEDED: {len(FIXTURES)} succeeded, 0 failed of {len(FIXTURES)}" in out
    assert len(ollama_server.chat_requests) == 1 + len(FIXTURES)  # the preflight's capped call, one per receipt
    assert f"Preflight: {ollama_server.url} accepts the key and serves loopback-model (1 LLM call" in out
    assert "would raise the stack's alarm" not in out
    assert re.search(r"moto server \(.*\): http://127\.0\.0\.1:\d+", out)


def test_run_local_validate_labels_then_judges_every_receipt_and_summarizes_both_runs(
    ollama_server: OllamaServer, template_file: Path, tmp_path: Path
) -> None:
    """--validate: the labeling run, then the validation run over the same table; both summaries, exit 0."""
    ollama_server.responder = stand_in_responder()
    files = FIXTURES[:2]

    result = run_cli(
        "--template",
        str(template_file),
        "--validate",
        "--receipts",
        *map(str, files),
        base_url=ollama_server.url,
        results_dir=tmp_path,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "ListReceipts: 2 receipts" in out and "ListPendingReceipts: 2 receipts" in out
    assert "Execution SUCCEEDED: 2 succeeded, 0 failed of 2" in out
    assert "Validation execution SUCCEEDED: 2 succeeded, 0 failed of 2" in out
    assert "Validating the PENDING labels: state machine receipt-labeling-dev-validate-labels-sf" in out
    for path in files:
        document = json.loads(path.read_text())
        # What the stand-in model proposes for each word, then how it judges that label.
        proposed = [(w["text"], stand_in_label(w["text"])) for line in document["lines"] for w in line["words"]]
        judged = Counter(stand_in_judgement(text, label) for text, label in proposed if label is not None)
        rows = [line.split() for line in out.splitlines() if line.startswith(f"{document['image_id']}#1")]
        assert len(rows) == 2, rows  # the labeling summary's row, then the validation summary's
        labeled, validation = rows
        assert labeled[2:] == [str(sum(judged.values())), "0", "0", "ok"]  # PENDING, VALID, other, result
        assert validation[1:] == [
            str(sum(judged.values())),
            str(judged["VALID"]),
            str(judged["INVALID"]),
            str(judged["NEEDS_REVIEW"]),
            "0",  # skipped (changed since read)
            "1",  # LLM calls
            "ok",
        ]
        progress = [line for line in out.splitlines() if line.startswith("[") and f"{document['image_id']}#1" in line]
        assert len(progress) == 2 and f"{judged['VALID']} VALID" in progress[1]
    # Two preflights, one labeling call and one judging call per receipt.
    assert len(ollama_server.chat_requests) == 2 + 2 * len(files)
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and [f.endswith("-validate") for f in folders].count(True) == 1
    for folder in tmp_path.iterdir():
        assert sorted(p.name for p in folder.iterdir()) == ["output.json", "results.json", "run.log"]
        assert json.loads((folder / "output.json").read_text())["output"]["succeeded"] == 2


def test_run_local_shows_a_failed_receipt_and_exits_1(
    ollama_server: OllamaServer, template_file: Path, tmp_path: Path
) -> None:
    good = label_words_responder(lambda text: "PRODUCT_NAME" if text.isalpha() else None)

    def responder(request: RecordedRequest) -> ScriptedResponse:
        if any(word.text == "QQGARBLEDQQ" for word in words_in_prompt(request)):
            return ScriptedResponse.answer("no JSON here")
        return good(request)

    ollama_server.responder = responder
    garbage = json.loads(FIXTURES[1].read_text())
    garbage["image_id"] = "5d1f3a2b-0c4e-4f6a-8b9c-1d2e3f4a5b6c"
    garbage["lines"][0]["words"][0]["text"] = "QQGARBLEDQQ"
    (tmp_path / "garbage.json").write_text(json.dumps(garbage))

    result = run_cli(
        "--template",
        str(template_file),
        "--receipts",
        str(FIXTURES[0]),
        str(tmp_path / "garbage.json"),
        base_url=ollama_server.url,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "ListReceipts: 2 receipts" in result.stdout  # exactly the files given
    lines = result.stdout.splitlines()
    failed_progress = [line for line in lines if line.startswith("[") and garbage["image_id"] in line]
    assert failed_progress and "FAILED  LLMOutputError" in failed_progress[-1]
    (row,) = [line for line in lines if line.startswith(f"{garbage['image_id']}#1")]
    assert row.split()[2:] == ["0", "0", "0", "FAILED", "LLMOutputError"]
    (good_row,) = [line for line in lines if line.startswith(f"{json.loads(FIXTURES[0].read_text())['image_id']}#1")]
    assert good_row.endswith(" ok")
    # 1 of 2 receipts failed: above the template's 10 % the execution fails, as on AWS.
    assert "Execution FAILED: States.ExceedToleratedFailureThreshold" in result.stdout
    assert "Deployed, this run would raise the stack's alarm: execution FAILED" in result.stdout


def test_run_local_with_a_rejected_key_stops_in_the_preflight_and_names_the_fix(
    ollama_server: OllamaServer, template_file: Path
) -> None:
    ollama_server.default = ScriptedResponse.http_error(401, "unauthorized")

    result = run_cli("--template", str(template_file), base_url=ollama_server.url, api_key="olk-placeholder")

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    (preflight,) = [line for line in lines if line.startswith("Preflight")]
    assert preflight.startswith("Preflight FAILED: LLMAuthError:") and "put-secret-value" in preflight
    assert not [line for line in lines if line.startswith("[")]  # no receipt was tried
    assert len(ollama_server.chat_requests) <= 2
    assert "Execution FAILED: LLMAuthError" in result.stdout
    assert "would raise the stack's alarm" in result.stdout


def test_run_local_without_an_ollama_endpoint_says_so() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    result = run_cli(base_url=f"http://127.0.0.1:{port}")

    assert result.returncode == 2
    assert f"no Ollama endpoint answers at http://127.0.0.1:{port}" in result.stderr
    assert "OLLAMA_BASE_URL" in result.stderr
    assert "Synthesizing" not in result.stdout  # it stops before doing anything slow


@pytest.mark.parametrize("flags", [(), ("--validate",)], ids=["labeling", "labeling-and-validation"])
def test_run_local_rejects_a_bad_receipt_file(tmp_path: Path, flags: tuple[str, ...]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"image_id": "not-a-uuid", "receipt_id": 1, "lines": []}))

    result = run_cli(*flags, "--receipts", str(bad), base_url="http://127.0.0.1:9")

    assert result.returncode == 2  # the documented status for bad arguments or receipt files
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"error: {bad}: ") and "image_id" in line


def test_run_local_with_a_glob_that_matches_nothing_says_so_in_one_line(tmp_path: Path) -> None:
    result = run_cli("--receipts", str(tmp_path / "*.json"), base_url="http://127.0.0.1:9")

    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no file matches {tmp_path / '*.json'}"


def test_run_local_stops_before_the_run_when_the_endpoint_does_not_serve_the_model(
    ollama_server: OllamaServer, template_file: Path
) -> None:
    result = run_cli("--template", str(template_file), "--model", "llama3.1:8b", base_url=ollama_server.url)

    assert result.returncode == 2
    assert "does not serve model 'llama3.1:8b'; it serves: loopback-model" in result.stderr
    assert ollama_server.chat_requests == []  # nothing was tried


def test_run_local_counts_receipts_not_attempts_keeps_logs_apart_and_saves_the_results(
    ollama_server: OllamaServer, template_file: Path, tmp_path: Path
) -> None:
    """A 500 on the first call: the receipt is retried (same number, 'failed (retried)'), never [2/1]."""
    good = label_words_responder(lambda text: "PRODUCT_NAME" if text.isalpha() else None)
    ollama_server.responder = good
    ollama_server.script(ScriptedResponse.answer({"labels": []}))  # the preflight's call
    for _ in range(2):  # both in-process attempts of the first receipt's call fail: the Lambda raises, SFN retries
        ollama_server.script(ScriptedResponse.http_error(500, "model runner crashed"))

    result = run_cli(
        "--template",
        str(template_file),
        "--receipts",
        str(FIXTURES[0]),
        base_url=ollama_server.url,
        results_dir=tmp_path,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split()[0] for line in progress] == ["[1/1]", "[1/1]"]
    assert "failed (retried)  LLMTransientError" in progress[0] and " ok " in progress[1]
    assert "chat call" not in result.stdout + result.stderr  # library log lines went to run.log
    (folder,) = list(tmp_path.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["output.json", "results.json", "run.log"]
    assert "chat call failed after 2 attempt(s)" in (folder / "run.log").read_text()
    assert json.loads((folder / "output.json").read_text())["output"]["succeeded"] == 1
    assert f"Results: {folder}" in result.stdout


def test_run_local_with_a_missing_template_file_says_so_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.template.json"

    result = run_cli("--template", str(missing), base_url="http://127.0.0.1:9")

    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --template {missing}: no such file (write one with make synth: cdk.out/)"
