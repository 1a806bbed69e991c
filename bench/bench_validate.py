"""ValidatePendingLabels, measured with local_pipeline (the synthesized state machines on moto, real handlers).

Rows: LLM calls per receipt judged and DynamoDB requests per label judged in a validation run over
the fixtures (labeled first by a CreateLabels run), and the same for a second validation run. How
each is measured: docs/benchmarks.md#validate-measurement.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from bench import Row, use_fake_aws_credentials
from local_pipeline.template import REPO_ROOT, synthesize_template

FIXTURES = REPO_ROOT / "tests" / "fixtures"
AREA = "validate"


def validation_rows(template: dict[str, Any]) -> list[Row]:
    from bench.bench_pipeline import DynamoRequests
    from local_pipeline.demo import stand_in_responder
    from local_pipeline.harness import LocalPipeline
    from tests.ollama_server import OllamaServer

    documents = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    with (
        OllamaServer(responder=stand_in_responder()) as server,
        LocalPipeline(template, ollama_base_url=server.url, ollama_model="loopback-model") as local,
    ):
        local.load_receipts(documents)
        created = local.run()
        requests = DynamoRequests()
        requests.install()
        chat_before = len(server.chat_requests)
        judged = local.run(kind="validate")
        calls = Counter(requests.calls)
        chat_judged = len(server.chat_requests) - chat_before
        requests.calls.clear()
        again = local.run(kind="validate")
        calls_again = Counter(requests.calls)
        chat_again = len(server.chat_requests) - chat_before - chat_judged
    for run in (created, judged, again):
        if run.status != "SUCCEEDED":
            raise RuntimeError(f"{run.kind} run: {run.status} {run.error} {run.cause}")
    results = [i.result for i in judged.invocations_of("ValidateReceipt") if i.ok]
    receipts = len(results)
    labels = sum(r["labels_pending"] for r in results)
    written = sum(r["labels_valid"] + r["labels_invalid"] + r["labels_needs_review"] for r in results)
    preflight = sum(i.result["llm_calls"] for i in judged.invocations_of("Preflight") if i.ok)
    per_receipt = (chat_judged - preflight) / receipts
    queries, updates = calls.get("Query", 0), calls.get("UpdateItem", 0)
    others = {k: v for k, v in calls.items() if k not in ("Query", "UpdateItem")}
    list_queries = 1  # ListPendingReceipts: one GSI3 page (keys only) for the fixtures' PENDING labels
    total = sum(calls.values())
    within = queries <= receipts + list_queries and updates == labels and not others
    return [
        Row(
            AREA,
            f"LLM calls per receipt judged ({receipts} fixture receipts, {labels} PENDING labels, through the "
            f"validation state machine, loopback Ollama, well-formed answers; plus the preflight's {preflight} "
            "capped call per run)",
            f"{per_receipt:.2f}",
            "1.0",
            per_receipt == 1.0 and preflight == 1,
        ),
        Row(
            AREA,
            f"DynamoDB requests per label judged ({total} requests for {labels} labels: {queries} Query incl. "
            f"{list_queries} by ListPendingReceipts, {updates} conditional UpdateItem, {written} written, "
            f"other {dict(others) or 0})",
            f"{total / labels:.2f}",
            "<= 1 UpdateItem per label + 1 Query per receipt + the list's Query pages",
            within,
        ),
        Row(
            AREA,
            f"second validation run: LLM calls / DynamoDB requests (nothing PENDING left: {dict(calls_again)})",
            f"{chat_again} / {sum(calls_again.values())}",
            "0 LLM calls, 1 Query, no write",
            chat_again == 0 and dict(calls_again) == {"Query": 1},
        ),
    ]


def rows() -> list[Row]:
    use_fake_aws_credentials()
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return validation_rows(synthesize_template())
