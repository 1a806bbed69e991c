"""The whole pipeline, measured with local_pipeline (the synthesized state machine on moto, real handlers).

Rows: synth time against an empty CDK app, LLM calls and DynamoDB requests per receipt, handler time
per receipt, parent history events by receipt count (and an inline Map's, for comparison). How each is
measured: docs/benchmarks.md#pipeline-measurement; the values: docs/running-locally.md.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import Row, run_timed, use_fake_aws_credentials
from local_pipeline.template import REPO_ROOT, cdk_json_context, synthesize_template

FIXTURES = REPO_ROOT / "tests" / "fixtures"
AREA = "pipeline"
SYNTH_RATIO_TARGET = 1.5
SYNTH_REPETITIONS = 3
HISTORY_TARGET = 100
SIZES = (100, 1_000, 10_000)
INLINE_SIZES = (100, 1_000)

_EMPTY_APP = """
import json, tempfile, time
t0 = time.perf_counter()
import aws_cdk as cdk
t1 = time.perf_counter()
app = cdk.App(outdir=tempfile.mkdtemp())
cdk.Stack(app, "Empty")
t2 = time.perf_counter()
app.synth()
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "build": t2 - t1, "synth": t3 - t2}))
"""

_THIS_APP = """
import json, sys, tempfile, time
sys.path.insert(0, ".")
t0 = time.perf_counter()
import aws_cdk as cdk
from app import build_app
t1 = time.perf_counter()
context = json.load(open("cdk.json"))["context"]
app = cdk.App(outdir=tempfile.mkdtemp(), context=context)
build_app(app)
t2 = time.perf_counter()
app.synth()
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "build": t2 - t1, "synth": t3 - t2}))
"""


# Node warm: the app's modules imported and an empty app synthesized with the same (shared) template
# validator first, so only this app's build and synth are timed.
_WARM = """
import json, sys, tempfile, time
sys.path.insert(0, ".")
import aws_cdk as cdk
from app import build_app, register_template_validator
empty = cdk.App(outdir=tempfile.mkdtemp())
register_template_validator(empty)
cdk.Stack(empty, "Empty")
empty.synth()
t0 = t1 = time.perf_counter()
app = cdk.App(outdir=tempfile.mkdtemp(), context=json.load(open("cdk.json"))["context"])
build_app(app)
t2 = time.perf_counter()
app.synth()
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "build": t2 - t1, "synth": t3 - t2}))
"""


def _synth_once(code: str) -> tuple[float, dict[str, float]]:
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"synth failed:\n{done.stderr[-3000:]}")
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, phases


_EMPTY_CLI_APP = """import aws_cdk as cdk

app = cdk.App()
cdk.Stack(app, "Empty")
app.synth()
"""


def _cli_synth_once(app_command: str, cwd: Path) -> float:
    """Wall seconds of ``cdk synth --quiet --output <tmp> --app <app_command>`` (what ``make synth`` runs)."""
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_VERSION_CHECK": "1",  # as the Makefile exports it
    }
    outdir = tempfile.mkdtemp(prefix="bench-cli-synth-")
    try:
        command = [str(REPO_ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--quiet", "--output", outdir]
        done, seconds, _ = run_timed([*command, "--app", app_command], cwd=cwd, env=env)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"cdk synth failed:\n{done.stderr[-3000:]}")
    return seconds


def cli_synth_row() -> Row:
    """This app against an empty CDK app, both through the CDK CLI with the same cdk.json context."""
    metric = "synth time through the CDK CLI (cdk synth --quiet, as make synth), this app / empty CDK app"
    if not (REPO_ROOT / "node_modules" / ".bin" / "cdk").exists():
        return Row(
            AREA,
            metric,
            "not measured: node_modules/.bin/cdk missing (make install)",
            f"<= {SYNTH_RATIO_TARGET}x",
            False,
        )
    empty_dir = Path(tempfile.mkdtemp(prefix="bench-empty-app-"))
    try:
        (empty_dir / "app.py").write_text(_EMPTY_CLI_APP)
        context = cdk_json_context()
        (empty_dir / "cdk.json").write_text(json.dumps({"context": context}))
        empty: list[float] = []
        this: list[float] = []
        for _ in range(SYNTH_REPETITIONS):  # interleaved, so machine load hits both alike
            empty.append(_cli_synth_once(f"{sys.executable} app.py", empty_dir))
            this.append(_cli_synth_once(f"{sys.executable} app.py", REPO_ROOT))
    finally:
        shutil.rmtree(empty_dir, ignore_errors=True)
    ratio = statistics.median(this) / statistics.median(empty)
    return Row(
        AREA,
        f"{metric} (median of {SYNTH_REPETITIONS}: {statistics.median(this):.1f} s / {statistics.median(empty):.1f} s)",
        f"{ratio:.2f}x",
        f"<= {SYNTH_RATIO_TARGET}x",
        ratio <= SYNTH_RATIO_TARGET,
    )


def synth_rows() -> list[Row]:
    empty: list[float] = []
    this: list[float] = []
    phases: list[dict[str, float]] = []
    empty_phases: list[dict[str, float]] = []
    for _ in range(SYNTH_REPETITIONS):  # interleaved, so machine load hits both alike
        seconds, parts = _synth_once(_EMPTY_APP)
        empty.append(seconds)
        empty_phases.append(parts)
        seconds, parts = _synth_once(_THIS_APP)
        this.append(seconds)
        phases.append(parts)
    ratio = statistics.median(this) / statistics.median(empty)
    warm = _synth_once(_WARM)[1]

    def medians(runs: list[dict[str, float]], keys: tuple[str, ...] = ("import", "build", "synth")) -> str:
        return " / ".join(f"{statistics.median(run[k] for run in runs):.1f} s" for k in keys)

    return [
        cli_synth_row(),
        Row(
            AREA,
            f"synth time without the CLI, this app / empty CDK app (fresh python -c each, "
            f"median of {SYNTH_REPETITIONS}: "
            f"{statistics.median(this):.1f} s / {statistics.median(empty):.1f} s)",
            f"{ratio:.2f}x",
            f"<= {SYNTH_RATIO_TARGET}x",
            ratio <= SYNTH_RATIO_TARGET,
        ),
        Row(
            AREA,
            "  phases, this app: import / build (creates the template validator first: app.py) / app.synth()",
            medians(phases),
        ),
        Row(
            AREA,
            "  phases, empty app: import / build / app.synth() (its synth is mostly constructing CDK's built-in "
            "CloudFormation validator, a WebAssembly engine, which every app pays once)",
            medians(empty_phases),
        ),
        Row(
            AREA,
            "  this app right after an empty app's synth in the same process (modules imported, validator built, "
            "Node warm): build / synth; the rest of its cold time is loading the aws_cdk modules it uses "
            "(Python and Node) and its first template validation",
            medians([warm], ("build", "synth")),
        ),
    ]


# ---- the pipeline on moto --------------------------------------------------------------------------
def _label_for(text: str) -> str | None:
    if re.fullmatch(r"-?\$?\d+\.\d\d", text):
        return "LINE_TOTAL"
    return "PRODUCT_NAME" if text.isalpha() else None


class DynamoRequests:
    """DynamoDB operations made through clients of boto3's default session (the handlers' clients)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def install(self) -> None:
        import boto3

        boto3._get_default_session().events.register("before-call.dynamodb", self)


def fixture_rows(template: dict[str, Any]) -> list[Row]:
    from local_pipeline.harness import LocalPipeline
    from tests.ollama_server import OllamaServer, label_words_responder

    documents = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    n = len(documents)
    with (
        OllamaServer(responder=label_words_responder(_label_for)) as server,
        LocalPipeline(template, ollama_base_url=server.url, ollama_model="loopback-model") as local,
    ):
        local.load_receipts(documents)
        requests = DynamoRequests()
        requests.install()
        first = local.run()
        chat_after_first = len(server.chat_requests)
        first_calls = Counter(requests.calls)
        requests.calls.clear()
        second = local.run()
        second_calls = Counter(requests.calls)
        chat_first = len(server.chat_requests)
    if first.status != "SUCCEEDED" or second.status != "SUCCEEDED":
        raise RuntimeError(f"fixture runs: {first.status} {first.error} / {second.status} {second.error}")
    results = [i.result for i in first.invocations_of("ProcessReceipt") if i.ok]
    proposed = sum(r["labels_added"] + r["labels_skipped_existing"] for r in results)
    list_queries = 1  # ListReceipts: one GSITYPE Query page for 5 receipts
    reads, puts, marks = first_calls.get("Query", 0), first_calls.get("PutItem", 0), first_calls.get("UpdateItem", 0)
    others = sum(v for k, v in first_calls.items() if k not in ("Query", "PutItem", "UpdateItem"))
    within = reads <= n + list_queries and puts == proposed and marks == n and others == 0
    rerun_within = second_calls.get("Query", 0) <= n + list_queries and sum(second_calls.values()) == second_calls.get(
        "Query", 0
    )
    preflight_calls = sum(i.result["llm_calls"] for i in first.invocations_of("Preflight") if i.ok)
    rerun_calls = chat_first - chat_after_first
    llm_per_receipt = (chat_after_first - preflight_calls) / n
    return [
        Row(
            AREA,
            f"LLM calls per receipt ({n} fixture receipts through the state machine, loopback Ollama; "
            f"plus the preflight's {preflight_calls} capped call per run)",
            f"{llm_per_receipt:.2f}",
            "1.0",
            llm_per_receipt == 1.0 and preflight_calls == 1,
        ),
        Row(
            AREA,
            "LLM calls, re-run over the labeled receipts (no preflight: nothing to label)",
            str(rerun_calls),
            "0",
            rerun_calls == 0,
        ),
        Row(
            AREA,
            f"DynamoDB requests per receipt, first run ({reads} Query incl. {list_queries} by ListReceipts, "
            f"{puts} PutItem for {proposed} proposed labels, {marks} UpdateItem markers, {others} other)",
            f"{sum(first_calls.values()) / n:.1f}",
            "<= 1 Query + 1 PutItem per proposed label + 1 UpdateItem (receipt_dynamo)",
            within,
        ),
        Row(
            AREA,
            f"DynamoDB requests per receipt, re-run (already labeled: {dict(second_calls)})",
            f"{sum(second_calls.values()) / n:.1f}",
            "<= 1 Query, no write",
            rerun_within,
        ),
    ]


def _instant_answer(messages: list[Any]) -> dict[str, Any]:
    """What a perfect model answers, instantly: a label for every ``[line:word] text`` of the prompt."""
    text = str(messages[-1].content)
    labels = []
    for line_id, word_id, word in re.findall(r"\[(\d+):(\d+)\] (\S+)", text):
        label = _label_for(word)
        if label:
            labels.append({"line_id": int(line_id), "word_id": int(word_id), "label": label, "reasoning": "instant"})
    return {"labels": labels}


def handler_time_rows(template: dict[str, Any]) -> list[Row]:
    from local_pipeline.harness import LocalPipeline
    from tests.scripted_chat import ScriptedChatModel

    documents = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    copies = []
    for i in range(20):
        clone = copy.deepcopy(documents[i % len(documents)])
        clone["image_id"] = str(uuid.uuid4())
        copies.append(clone)
    llm = ScriptedChatModel(answers=[_instant_answer], repeat_last=True, model="instant")
    with LocalPipeline(template, ollama_base_url="http://127.0.0.1:9", chat_model=llm) as local:
        local.load_receipts(copies)
        run = local.run()
    times = [i.seconds for i in run.invocations_of("ProcessReceipt") if i.ok]
    p90_ms = statistics.quantiles(times, n=10)[-1] * 1000
    words = statistics.mean(len([w for line in d["lines"] for w in line["words"]]) for d in copies)
    return [
        Row(
            AREA,
            f"ProcessReceipt handler time per receipt, instant LLM, in the state machine (moto DynamoDB, 3 at once, "
            f"{len(times)} receipts, {words:.0f} words avg; median, p90 {p90_ms:.0f} ms)",
            f"{statistics.median(times) * 1000:.0f} ms",
        ),
        Row(
            AREA,
            "  of which label_receipt alone (graph, prompt, validation; no I/O), median",
            _label_only_ms(documents),
        ),
    ]


def _label_only_ms(documents: list[dict[str, Any]]) -> str:
    from receipt_dynamo import parse_receipt_document
    from receipt_label import label_receipt
    from tests.scripted_chat import ScriptedChatModel

    times = []
    for _ in range(3):
        for document in documents:
            details = parse_receipt_document(document)
            llm = ScriptedChatModel(answers=[_instant_answer], repeat_last=True, model="instant")
            started = time.perf_counter()
            label_receipt(details, llm=llm)
            times.append(time.perf_counter() - started)
    return f"{statistics.median(times) * 1000:.0f} ms"


def _instant_process(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The process function's two events (preflight and one receipt), answered at once."""
    if event.get("preflight"):
        return {"preflight": "ok", "model": "instant", "base_url": "http://127.0.0.1:9", "llm_calls": 0}
    return {"image_id": event["image_id"], "receipt_id": event["receipt_id"], "labels_added": 0, "llm_calls": 0}


def _put_receipts(table_name: str, count: int) -> None:
    """``count`` Receipt items (no lines or words: the stand-in ProcessReceipt does not read them)."""
    import boto3

    from receipt_dynamo import Receipt

    table = boto3.resource("dynamodb", region_name="us-east-1").Table(table_name)
    with table.batch_writer() as batch:
        for n in range(count):
            batch.put_item(Item=_plain(Receipt(image_id=str(uuid.UUID(int=n + 1)), receipt_id=1)))


def _plain(receipt: Any) -> dict[str, Any]:
    out = {}
    for name, value in receipt.to_item().items():
        ((kind, raw),) = value.items()
        out[name] = int(raw) if kind == "N" else raw
    return out


def distributed_history(template: dict[str, Any], count: int) -> tuple[int, float]:
    from local_pipeline.harness import LocalPipeline

    with LocalPipeline(
        template, ollama_base_url="http://127.0.0.1:9", handlers={"ProcessReceipt": _instant_process}
    ) as local:
        _put_receipts(local.table_name, count)
        run = local.run(timeout=1800)
    if run.status != "SUCCEEDED" or not run.output or run.output["succeeded"] != count:
        raise RuntimeError(f"{count} receipts: {run.status} {run.error} {run.cause}")
    return len(run.history), run.seconds


def inline_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """The same machine with an inline Map over the list Lambda's payload (rejected: docs/state-machine.md)."""
    inline = copy.deepcopy(definition)
    states = inline["States"]
    states["ListReceipts"]["ResultSelector"]["items.$"] = "$.Payload.items"
    label = states["LabelReceipts"]
    for key in (
        "ItemReader",
        "ResultWriter",
        "ResultSelector",
        "Label",
        "ToleratedFailurePercentage",
        "ToleratedFailureCount",
    ):
        label.pop(key, None)
    label["ItemsPath"] = "$.list.items"
    label["ItemProcessor"]["ProcessorConfig"] = {"Mode": "INLINE"}
    label["ResultPath"] = None
    label["Next"] = "Summarize"
    states.pop("CountResults", None)
    states["Summarize"]["Parameters"] = {"receipt_count.$": "$.list.receipt_count"}
    return inline


def inline_history(template: dict[str, Any], count: int) -> int:
    from local_pipeline.harness import LocalPipeline
    from local_pipeline.template import LocalStack

    stack = LocalStack(template)
    state_machine_id = stack.state_machine("create")
    transformed = copy.deepcopy(template)
    transformed["Resources"][state_machine_id]["Properties"]["DefinitionString"] = json.dumps(
        inline_definition(stack.definition(state_machine_id))
    )
    items = [{"image_id": str(uuid.UUID(int=n + 1)), "receipt_id": 1} for n in range(count)]

    def list_inline(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {
            "receipt_count": count,
            "receipts_to_label": count,
            "manifest_bucket": "-",
            "manifest_key": "-",
            "items": items,
        }

    with LocalPipeline(
        transformed,
        ollama_base_url="http://127.0.0.1:9",
        handlers={"ListReceipts": list_inline, "ProcessReceipt": _instant_process},
        kinds=["create"],  # still found by its worker: the inline Map runs ProcessReceipt too
    ) as local:
        run = local.run(timeout=1800)
    if run.status != "SUCCEEDED":
        raise RuntimeError(f"inline {count}: {run.status} {run.error} {run.cause}")
    return len(run.history)


def history_rows(template: dict[str, Any], sizes: tuple[int, ...] = SIZES) -> list[Row]:
    out = []
    for count in sizes:
        events, seconds = distributed_history(template, count)
        out.append(
            Row(
                AREA,
                f"parent history events, Distributed Map, {count:,} receipts (ran in {seconds:.0f} s on moto)",
                str(events),
                f"<= {HISTORY_TARGET}",
                events <= HISTORY_TARGET,
            )
        )
    measured = {count: inline_history(template, count) for count in INLINE_SIZES}
    (n1, e1), (n2, e2) = sorted(measured.items())
    per_item = (e2 - e1) / (n2 - n1)
    base = e1 - per_item * n1
    for count in sizes:
        if count in measured:
            how, value = "measured", measured[count]
        else:
            how, value = f"extrapolated: {base:.0f} + {per_item:.1f} x N", round(base + per_item * count)
        out.append(
            Row(
                AREA,
                f"  for comparison: inline Map, {count:,} receipts ({how})",
                f"{value:,}",
                "(AWS limit 25,000 events; 256 KB payload ~ 4,000 receipts)",
            )
        )
    return out


def rows() -> list[Row]:
    use_fake_aws_credentials()
    sys.path.insert(0, str(REPO_ROOT))
    out = synth_rows()
    template = synthesize_template()
    steps: list[Callable[[dict[str, Any]], list[Row]]] = [fixture_rows, handler_time_rows, history_rows]
    for step in steps:
        out.extend(step(template))
    return out
