"""``make demo`` / ``python -m local_pipeline.demo``: both pipelines over the fixtures, no LLM, no AWS.

``make run-local --validate`` with a scripted stand-in model behind the loopback Ollama server of
``tests/ollama_server.py``: it labels (:func:`stand_in_label`), then judges those labels
(:func:`stand_in_judgement`); then one receipt's words with the labels read back from the table
(docs/running-locally.md). Exit status: the runs' (0 every receipt labeled and judged).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from local_pipeline.template import REPO_ROOT

if TYPE_CHECKING:
    from tests.ollama_server import RecordedRequest, Responder, ScriptedResponse

BANNER = "DEMO: the labels and their judgements come from a scripted stand-in model, not an LLM"
_PRICE = re.compile(r"^-?\$?\d{0,6}[.,]\d{2}$")
#: Words the stand-in judge knows are not product names.
NOT_PRODUCT_NAMES = frozenset(
    {"AMEX", "CASH", "CHANGE", "CREDIT", "DEBIT", "MEMBER", "SAVINGS", "STORE", "SUBTOTAL", "TAX", "TOTAL", "VISA"}
)
_TO_JUDGE = re.compile(r"^\[(\d+):(\d+)\] (.*) -> ([A-Z0-9_]+)$")


def stand_in_label(text: str) -> str | None:
    """PRODUCT_NAME for alphabetic words, LINE_TOTAL for price-like words (``12.99``, ``$3.50``), else nothing."""
    if _PRICE.match(text):
        return "LINE_TOTAL"
    return "PRODUCT_NAME" if text.isalpha() else None


def stand_in_judgement(text: str, label: str) -> str:
    """VALID, INVALID or NEEDS_REVIEW for ``label`` on a word: what the stand-in judge answers.

    A price-like LINE_TOTAL and a PRODUCT_NAME of three or more letters are VALID; a PRODUCT_NAME
    on a word of :data:`NOT_PRODUCT_NAMES` (or a LINE_TOTAL on anything else) INVALID; a shorter
    PRODUCT_NAME NEEDS_REVIEW.
    """
    if label == "LINE_TOTAL":
        return "VALID" if _PRICE.match(text) else "INVALID"
    if label == "PRODUCT_NAME" and text.upper() in NOT_PRODUCT_NAMES:
        return "INVALID"
    return "VALID" if len(text) >= 3 else "NEEDS_REVIEW"


def stand_in_reason(text: str, label: str, status: str) -> str:
    """The reason the stand-in judge gives for its judgement."""
    return f"stand-in: {text} as {label} is {status}"


@dataclass(frozen=True)
class LabelToJudge:
    """One line of a judging prompt's ``Labels to judge`` list: ``[line_id:word_id] text -> LABEL``."""

    line_id: int
    word_id: int
    text: str
    label: str


def labels_to_judge_in_prompt(request: RecordedRequest) -> list[LabelToJudge]:
    """The labels a judging request lists, in prompt order; empty for any other request (e.g. labeling).

    They are read from the first user message that lists them (a repair call ends with a message
    listing problems instead).
    """
    for message in request.messages:
        if message.get("role") != "user":
            continue
        _, found, listing = str(message.get("content") or "").partition("\nLabels to judge (")
        if not found:
            continue
        labels = []
        for line in listing.splitlines()[1:]:
            match = _TO_JUDGE.match(line.strip())
            if match:
                line_id, word_id, text, label = match.groups()
                labels.append(LabelToJudge(int(line_id), int(word_id), text, label))
        return labels
    return []


def judge_labels_responder(judge_for: Callable[[str, str], str]) -> Responder:
    """A responder answering a well-formed judgement, ``judge_for(text, label)``, for every label listed."""
    from tests.ollama_server import ScriptedResponse

    def respond(request: RecordedRequest) -> ScriptedResponse:
        judgements = []
        for item in labels_to_judge_in_prompt(request):
            status = judge_for(item.text, item.label)
            judgements.append(
                {
                    "line_id": item.line_id,
                    "word_id": item.word_id,
                    "label": item.label,
                    "status": status,
                    "reason": stand_in_reason(item.text, item.label, status),
                }
            )
        return ScriptedResponse.answer({"judgements": judgements})

    return respond


def stand_in_responder(
    label_for: Callable[[str], str | None] = stand_in_label, judge_for: Callable[[str, str], str] = stand_in_judgement
) -> Responder:
    """One responder for both pipelines: judging requests are judged, any other is labeled."""
    from tests.ollama_server import label_words_responder

    label, judge = label_words_responder(label_for), judge_labels_responder(judge_for)

    def respond(request: RecordedRequest) -> ScriptedResponse:
        return judge(request) if labels_to_judge_in_prompt(request) else label(request)

    return respond


def word_rows(details: Any) -> list[str]:
    """``[line:word] TEXT -> LABEL (STATUS)`` for every word of a receipt (``-`` when it has no label)."""
    labels: dict[tuple[int, int], list[Any]] = {}
    for label in details.labels:
        labels.setdefault((label.line_id, label.word_id), []).append(label)
    rows = []
    for word in details.words:
        found = labels.get((word.line_id, word.word_id), [])
        what = ", ".join(f"{x.label} ({x.validation_status.value})" for x in found) or "-"
        rows.append(f"[{word.line_id}:{word.word_id}] {word.text} -> {what}")
    return rows


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # tests/ollama_server.py lives beside the package

    import local_pipeline.__main__ as run_local
    from tests.ollama_server import OllamaServer

    extra = list(sys.argv[1:] if argv is None else argv)
    print(BANNER, file=out, flush=True)
    # The table is gone once the runs return: read one receipt back while it is there.
    shown: dict[str, Any] = {}

    def capture(pipeline: Any, keys: list[tuple[str, int]], run: Any) -> None:
        try:
            store = pipeline.dynamo()
            receipts = [store.get_receipt_details(image_id, receipt_id) for image_id, receipt_id in keys]
            labeled = [d for d in receipts if d.labels] or receipts
            shown["details"] = min(labeled, key=lambda d: len(d.words)) if labeled else None
        except Exception as error:  # the demo's epilogue must not hide the run's own result
            shown["error"] = error

    with OllamaServer(responder=stand_in_responder(), model="demo-stand-in") as server:
        code = run_local.main(
            [*extra, "--validate", "--base-url", server.url, "--model", server.model], out=out, after_run=capture
        )

    print("", file=out)
    print(BANNER, file=out)
    details = shown.get("details")
    if details is not None:
        receipt = details.receipt
        print(
            f"Receipt {receipt.image_id}#{receipt.receipt_id}: its words and the labels in the table "
            "(proposed by the labeling run, then judged VALID, INVALID or NEEDS_REVIEW by the validation run):",
            file=out,
        )
        for row in word_rows(details):
            print(f"  {row}", file=out)
    elif "error" in shown:
        print(f"(could not read a receipt back: {shown['error']})", file=out)
    out.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
