"""receipt_label: LLM calls per receipt and prompt size, measured over HTTP with the real ChatOllama.

Every fixture receipt is labeled by `label_receipt` with `create_chat_model(...)` against the
loopback Ollama server (tests/ollama_server.py) answering well-formed labels; calls are counted
by the server, so a hidden retry or repair would show. Prompt tokens are estimated as characters
of the messages sent divided by 4 (no tokenizer offline).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench import Row
from receipt_dynamo import parse_receipt_document
from receipt_label import LabelingOptions, OllamaSettings, create_chat_model, label_receipt
from receipt_label.prompts import estimate_tokens
from tests.ollama_server import OllamaServer, ScriptedResponse, label_words_responder

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
AREA = "label"


def _label_for(text: str) -> str:
    return "LINE_TOTAL" if re.fullmatch(r"-?\$?\d+\.\d\d", text) else "PRODUCT_NAME"


def _synthetic(n_words: int) -> dict[str, object]:
    per_line = 8
    return {
        "image_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "receipt_id": 1,
        "lines": [
            {
                "line_id": line + 1,
                "text": "x",
                "words": [
                    {"word_id": j + 1, "text": f"ITEM{line:03d}{j}"}
                    for j in range(min(per_line, n_words - line * per_line))
                ],
            }
            for line in range(-(-n_words // per_line))
        ],
    }


def rows() -> list[Row]:
    docs = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    if not docs:
        return [Row(AREA, "fixtures", "none found in tests/fixtures", ok=False)]
    receipts = [parse_receipt_document(d) for d in docs]
    out: list[Row] = []
    with OllamaServer(responder=label_words_responder(_label_for)) as server:
        llm = create_chat_model(
            OllamaSettings(base_url=server.url, model="bench-model", timeout_seconds=5), api_key="k"
        )
        tokens: list[int] = []
        words = 0
        for details in receipts:
            before = len(server.chat_requests)
            label_receipt(details, llm=llm)
            for request in server.chat_requests[before:]:
                tokens.append(estimate_tokens(request.prompt_chars))
            words += len(details.words)
        calls = len(server.chat_requests) / len(receipts)
        out.append(
            Row(
                AREA,
                f"LLM calls per receipt ({len(receipts)} fixtures, well-formed answers)",
                f"{calls:.2f}",
                "1.0",
                calls == 1.0,
            )
        )
        out.append(
            Row(
                AREA,
                "prompt tokens per receipt, estimate chars/4 (mean / max)",
                f"{sum(tokens) / len(tokens):.0f} / {max(tokens)} ({words / len(receipts):.0f} words avg)",
            )
        )

        # one malformed answer per receipt: the repair costs exactly one more call
        server.clear()
        for details in receipts:
            server.script(ScriptedResponse.answer('{"labels": [{"line_id": 1,'))
            label_receipt(details, llm=llm, options=LabelingOptions(retry_delay_seconds=0))
        repair_calls = len(server.chat_requests) / len(receipts)
        out.append(
            Row(
                AREA, "LLM calls per receipt, first answer malformed", f"{repair_calls:.2f}", "2.0", repair_calls == 2.0
            )
        )

        # linear prompt size: tokens per word at 100 and 1,000 words
        per_word = {}
        for n in (100, 1000):
            server.clear()
            label_receipt(parse_receipt_document(_synthetic(n)), llm=llm)
            per_word[n] = estimate_tokens(server.chat_requests[0].prompt_chars)
        marginal = (per_word[1000] - per_word[100]) / 900
        out.append(
            Row(
                AREA,
                "prompt tokens: 1,000 words / 100 words (linear: marginal cost per word constant)",
                f"{per_word[1000]} / {per_word[100]} ({marginal:.2f} tokens per added word)",
                "<= 6 tokens per added word",
                marginal <= 6,
            )
        )
    opts = LabelingOptions()
    worst = (1 + opts.max_repair_calls) * opts.transient_attempts
    out.append(Row(AREA, "worst-case LLM calls per Lambda invocation (repair x in-process retries)", str(worst)))
    return out
