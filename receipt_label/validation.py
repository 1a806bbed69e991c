"""Judging the PENDING labels this pipeline proposed: one chat call per receipt, VALID / INVALID / NEEDS_REVIEW.

    result = judge_receipt(details, llm=create_chat_model(settings))
    result.judgements  # LabelJudgement per PENDING label of the pipeline (labels_to_judge), in key order

The graph is the answer loop of ``receipt_label.chat_graph`` (the labeling graph's): prepare the
prompt (the whole receipt as the labeling prompt shows it, then the labels to judge), one chat call,
check that every label to judge is judged exactly once and nothing else, at most one repair call,
then ``LLMOutputError``. Prompt, schema and rules: docs/labeling.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from pydantic import ValidationError

from receipt_dynamo import LabelJudgement, ReceiptDetails, ReceiptWordLabel, ValidationStatus
from receipt_label import prompts
from receipt_label.answer import (
    AnswerFormatError,
    WordLabelItem,
    answer_json_schema,
    item_problems,
    load_answer_object,
)
from receipt_label.chat_graph import (
    ChatCallOptions,
    build_answer_graph,
    call_stats,
    cut_answer_errors,
    fresh_counters,
)
from receipt_label.graph import PROPOSED_BY_PREFIX, existing_labels, normalize_label
from receipt_label.labeler import invoke_graph
from receipt_label.llm import model_name_of, with_answer_format
from receipt_label.state import ChatCallStats, ChatState
from receipt_label.taxonomy import CORE_LABELS

#: What a judgement may say, in the order the prompt explains them.
JUDGEMENT_STATUSES: tuple[str, ...] = (
    ValidationStatus.VALID.value,
    ValidationStatus.INVALID.value,
    ValidationStatus.NEEDS_REVIEW.value,
)

_LabelKey = tuple[int, int, str]


def judgement_json_schema(labels: Iterable[str]) -> dict[str, Any]:
    """The answer's JSON schema (Ollama's ``format``), its ``label`` limited to ``labels``."""
    return answer_json_schema(
        "judgements",
        sorted(set(labels)),
        status={"type": "string", "enum": list(JUDGEMENT_STATUSES)},
        reason={"type": "string"},
    )


#: The schema with every label of the taxonomy (a call sends the labels of its receipt only).
JUDGEMENT_JSON_SCHEMA = judgement_json_schema(CORE_LABELS)


@dataclass(frozen=True)
class JudgingOptions(ChatCallOptions):
    """Tuning of the judging workflow (and of its answer loop); the defaults are what the pipeline uses."""

    max_reason_chars: int = 300


# ---- which labels, and the prompt --------------------------------------------------------------------


def labels_to_judge(details: ReceiptDetails) -> list[ReceiptWordLabel]:
    """The receipt's PENDING labels proposed by this pipeline (``receipt_label:``), in key order."""
    return [
        label
        for label in details.labels
        if label.validation_status is ValidationStatus.PENDING
        and (label.label_proposed_by or "").startswith(PROPOSED_BY_PREFIX)
    ]


_EXAMPLE = json.dumps(
    {
        "judgements": [
            {"line_id": 1, "word_id": 1, "label": "MERCHANT_NAME", "status": "VALID", "reason": "store name at top"},
            {"line_id": 7, "word_id": 3, "label": "TAX", "status": "INVALID", "reason": "item price, not tax"},
        ]
    }
)


def system_prompt() -> str:
    taxonomy = "\n".join(f"- {name}: {definition}" for name, definition in CORE_LABELS.items())
    return f"""You check labels proposed for the words of a shopping receipt read by OCR.

Labels:
{taxonomy}

The receipt comes first: each word as [line_id:word_id] text, each line one row of the receipt as \
printed, top to bottom, words left to right; a word followed by {{LABEL, ...}} carries those labels. \
Then the labels to judge, one per line: [line_id:word_id] text -> LABEL.

For each label to judge, decide with the whole receipt as context:
- VALID: the word is that label on this receipt.
- INVALID: it is not (another label fits it, or none does).
- NEEDS_REVIEW: the receipt does not let you tell (unreadable, ambiguous).
Judge every listed label exactly once and nothing else; copy line_id, word_id and label as listed.
reason: a few words (at most 12) saying why.

Answer with JSON only, no other text, in this form:
{_EXAMPLE}"""


def user_prompt(details: ReceiptDetails, pending: Sequence[ReceiptWordLabel]) -> str:
    view = prompts.receipt_view(details, existing_labels(details))
    texts = {(w.line_id, w.word_id): " ".join(w.text.split()) for w in details.words}
    to_judge = "\n".join(
        f"[{lbl.line_id}:{lbl.word_id}] {texts.get(lbl.word_key, '?')} -> {lbl.label}" for lbl in pending
    )
    return (
        f"Receipt with {view.size}, shown {view.shown}:\n\n{view.listing}\n\n"
        f"Labels to judge ({len(pending)}):\n{to_judge}"
    )


def initial_messages(details: ReceiptDetails, pending: Sequence[ReceiptWordLabel]) -> list[BaseMessage]:
    return [SystemMessage(content=system_prompt()), HumanMessage(content=user_prompt(details, pending))]


def repair_prompt(errors: Iterable[str]) -> str:
    return (
        "Your previous answer could not be used:\n"
        f"{prompts.problem_listing(errors)}\n\n"
        "Answer again with the complete JSON: one judgement for every label listed above, each exactly once, "
        "no other label, status VALID, INVALID or NEEDS_REVIEW. JSON only."
    )


# ---- the answer ---------------------------------------------------------------------------------------


class JudgementItem(WordLabelItem):
    """One item of the judging answer: the model's status for a label, and why."""

    status: str
    reason: str = ""


@dataclass(frozen=True)
class JudgementReview:
    """What an answer gives: every judgement when ``errors`` is empty, else nothing and why."""

    judgements: list[LabelJudgement]
    errors: list[str]


def _status(text: str) -> ValidationStatus | None:
    value = "_".join(text.replace("-", " ").split()).upper()
    return ValidationStatus(value) if value in JUDGEMENT_STATUSES else None


def review_judgements(
    text: str, pending: Sequence[ReceiptWordLabel], *, max_reason_chars: int = 300
) -> JudgementReview:
    """Check an answer against the labels to judge: each judged exactly once, nothing else, a known status."""
    try:
        items = load_answer_object(text, "judgements")
    except AnswerFormatError as exc:
        return JudgementReview([], [str(exc)])
    by_key: dict[_LabelKey, ReceiptWordLabel] = {(lbl.line_id, lbl.word_id, lbl.label): lbl for lbl in pending}
    decided: dict[_LabelKey, LabelJudgement] = {}
    errors: list[str] = []
    for index, raw in enumerate(items):
        try:
            item = JudgementItem.model_validate(raw)
        except ValidationError as exc:
            errors.append(f"item {index} is malformed: {item_problems(exc)}")
            continue
        key = (item.line_id, item.word_id, normalize_label(item.label))
        where = f"[{item.line_id}:{item.word_id}] {key[2]}"
        status = _status(item.status)
        if key not in by_key:
            errors.append(f"{where} is not one of the labels to judge")
        elif status is None:
            errors.append(f"{where}: status {item.status!r} is not {', '.join(JUDGEMENT_STATUSES)}")
        elif key in decided:
            errors.append(f"{where} is judged more than once")
        else:
            reason = " ".join(item.reason.split())[:max_reason_chars]
            decided[key] = LabelJudgement.of(by_key[key], status, reason)
    errors.extend(f"[{k[0]}:{k[1]}] {k[2]} is not judged" for k in by_key if k not in decided)
    if errors:
        return JudgementReview([], errors)
    return JudgementReview([decided[k] for k in by_key], [])


# ---- the graph and its entry point ------------------------------------------------------------------


class JudgingState(ChatState, total=False):
    details: ReceiptDetails
    model_name: str
    pending: list[ReceiptWordLabel]
    judgements: list[LabelJudgement]


@dataclass
class JudgingResult(ChatCallStats):
    """What ``judge_receipt`` returns, with the chat calls' stats (``llm_calls`` 0 when nothing is pending)."""

    judgements: list[LabelJudgement]


def build_judging_graph(
    llm: Runnable[Any, Any], *, model_name: str, options: JudgingOptions | None = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the judging workflow around ``llm``; the state needs ``details`` (and ``model_name``)."""
    opts = options or JudgingOptions()

    def build_prompt(state: JudgingState) -> dict[str, Any]:
        pending = labels_to_judge(state["details"])
        messages = initial_messages(state["details"], pending)
        return {
            "pending": pending,
            "messages": messages,
            "prompt_chars": prompts.prompt_chars(messages),
            "judgements": [],
            **fresh_counters(),
        }

    def check(state: JudgingState) -> tuple[dict[str, Any], list[str]]:
        review = review_judgements(state["answer_text"], state["pending"], max_reason_chars=opts.max_reason_chars)
        errors = cut_answer_errors(state, review.errors, field="reason") if review.errors else []
        return {"judgements": review.judgements}, errors

    return build_answer_graph(
        JudgingState,
        llm=llm,
        options=opts,
        prepare=("build_prompt", build_prompt),
        needs_call=lambda state: bool(state["pending"]),
        check=("check_judgements", check),
        finish=("judged", lambda state: {}),
        repair_prompt=repair_prompt,
        name="receipt_label_judge",
    )


def judge_receipt(
    details: ReceiptDetails,
    *,
    llm: Runnable[Any, Any],
    model_name: str | None = None,
    options: JudgingOptions | None = None,
    config: RunnableConfig | None = None,
) -> JudgingResult:
    """Judge every PENDING label of this pipeline on the receipt, normally with one chat call.

    ``model_name``: names the validator (by default the chat model's). Raises the chat call's typed
    errors, or ``LLMOutputError`` when the answer is still unusable after one repair call.
    """
    name = model_name or model_name_of(llm)
    pending = labels_to_judge(details)
    model = with_answer_format(llm, judgement_json_schema(lbl.label for lbl in pending))
    graph = build_judging_graph(model, model_name=name, options=options)
    final = invoke_graph(
        graph, {"details": details, "model_name": name}, "judge_receipt", details.receipt, name, config
    )
    return JudgingResult(judgements=list(final.get("judgements", [])), **call_stats(final, name))
