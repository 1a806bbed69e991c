"""receipt_label: LLM calls per receipt and prompt size, measured over HTTP with the real ChatOllama.

Every fixture receipt is labeled by `label_receipt` with `create_chat_model(...)` against the
loopback Ollama server (tests/ollama_server.py) answering well-formed labels; calls are counted
by the server, so a hidden retry or repair would show. Prompt tokens are estimated as characters
of the messages sent divided by 4 (no tokenizer offline).
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics

from bench import Row
from local_pipeline.template import REPO_ROOT
from receipt_dynamo import ReceiptDetails, parse_receipt_document
from receipt_label import LabelingOptions, OllamaSettings, create_chat_model, label_receipt, prompts
from receipt_label.layout import visual_rows
from receipt_label.prompts import estimate_tokens
from tests.ollama_server import OllamaServer, ScriptedResponse, label_words_responder

FIXTURES = REPO_ROOT / "tests" / "fixtures"
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
                f"prompt tokens per receipt, estimate chars/4, {len(receipts)} fixtures (min / median / max)",
                f"{min(tokens)} / {statistics.median(tokens):.0f} / {max(tokens)} "
                f"({words / len(receipts):.0f} words avg)",
            )
        )
        out.extend(layout_rows(receipts))

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


def _without_geometry(details: ReceiptDetails) -> ReceiptDetails:
    """The same receipt with no boxes: the prompt falls back to OCR line order (the listing before the layout)."""
    return dataclasses.replace(
        details,
        lines=[dataclasses.replace(line, bounding_box=None) for line in details.lines],
        words=[dataclasses.replace(word, bounding_box=None) for word in details.words],
    )


def _prompt_tokens(details: ReceiptDetails) -> int:
    return estimate_tokens(prompts.prompt_chars(prompts.initial_messages(details, {})))


def layout_rows(receipts: list[ReceiptDetails]) -> list[Row]:
    """The printed layout: side-by-side OCR lines sharing a prompt row, and its cost in prompt tokens."""
    from tests.receipt_layouts import FIXTURES as LAYOUTS
    from tests.receipt_layouts import layout_score

    expected = kept = extra = 0
    for build in LAYOUTS.values():
        document, truth = build()
        rows = visual_rows(parse_receipt_document(document)) or []
        scored = layout_score(([w.line_id for w in row] for row in rows), truth)
        expected, kept, extra = expected + scored[0], kept + scored[1], extra + scored[2]
    share = kept / expected if expected else 0.0
    laid_out = [d for d in receipts if visual_rows(d) is not None]
    with_layout = [_prompt_tokens(d) for d in laid_out]
    line_order = [_prompt_tokens(_without_geometry(d)) for d in laid_out]
    words = [len(d.words) for d in laid_out]
    fixed = _prompt_tokens(parse_receipt_document(_synthetic(1))) - 3
    per_word = (sum(with_layout) - fixed * len(with_layout)) / sum(words)
    growth = sum(with_layout) / sum(line_order) - 1
    return [
        Row(
            AREA,
            f"side-by-side OCR lines sharing one prompt row ({len(LAYOUTS)} real-world fixtures: split rows, "
            f"2 degree skew, QTY/UNIT/AMOUNT block; {extra} pairs joined that are not printed side by side)",
            f"{kept}/{expected} = {share:.0%}",
            "all",
            kept == expected and extra == 0,
        ),
        Row(
            AREA,
            f"prompt tokens with the printed layout vs OCR line order ({len(with_layout)} fixtures with geometry)",
            f"{sum(with_layout)} vs {sum(line_order)} ({growth:+.1%})",
            "<= +5%",
            growth <= 0.05,
        ),
        Row(
            AREA,
            f"prompt tokens per word with the layout, beyond the fixed instructions (about {fixed} tokens)",
            f"{per_word:.2f}",
            "<= 4.0",
            per_word <= 4.0,
        ),
    ]
