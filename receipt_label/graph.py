"""The labeling workflow as a LangGraph graph.

    START -> build_prompt --> call_model --> validate --ok------> build_labels --> END
                  |               ^              |--repair--> repair --+       ^
                  |               +------------------------------------+       |
                  |                              '--fail----> fail (raises LLMOutputError)
                  '-- every word already labeled: no call ---------------------'

- build_prompt: system instructions (taxonomy, rules, answer form) + the receipt's words, row by row
  as printed when they have geometry (`receipt_label.layout`), else by OCR line.
- call_model: one chat call (`invoke_with_retries`: small in-process retries for transient errors).
  The loop itself (call, verdict, repair, fail) is `receipt_label.chat_graph`, shared with judging.
- validate: parse the JSON; check each proposal (word exists, label in the taxonomy, word not
  already labeled, one label per word unless the taxonomy lets the labels share it, no duplicates).
  Unusable answers (not JSON, wrong shape) and answers with too many invalid items go to one
  repair call that shows the model its errors; so does an empty first answer for a receipt with
  words to label (an empty second one is accepted).
- build_labels: `ReceiptWordLabel` objects, PENDING, `label_proposed_by = "receipt_label:<model>"`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import Runnable
from langgraph.graph.state import CompiledStateGraph

from receipt_dynamo import PIPELINE_PROPOSER_PREFIX, ReceiptDetails, ReceiptWordLabel, ValidationStatus
from receipt_label import prompts
from receipt_label.answer import AnswerFormatError, LabelProposal, parse_answer
from receipt_label.chat_graph import ChatCallOptions, build_answer_graph, cut_answer_errors, fresh_counters
from receipt_label.state import LabelingState, RejectedProposal
from receipt_label.taxonomy import CORE_LABELS, labels_may_share_a_word

logger = logging.getLogger(__name__)

PROPOSED_BY_PREFIX = PIPELINE_PROPOSER_PREFIX


@dataclass(frozen=True)
class LabelingOptions(ChatCallOptions):
    """Tuning of the workflow (and of its answer loop); the defaults are what the pipeline uses."""

    repair_min_invalid: int = 3
    """An answer needs a repair when its invalid items reach this count AND ..."""
    repair_invalid_fraction: float = 0.1
    """... this share of its items (unknown word, unknown label, malformed item, conflicting labels)."""
    repair_min_unlabeled_for_empty: int = 5
    """An empty first answer gets a repair call when at least this many words have no label yet."""
    max_reasoning_chars: int = 500


@dataclass(frozen=True)
class Review:
    accepted: list[LabelProposal]
    rejected: list[RejectedProposal]
    invalid: int  # items that count towards a repair
    total: int
    unusable: str | None  # why the whole answer cannot be used, if it cannot


def normalize_label(label: str) -> str:
    return re.sub(r"[\s\-]+", "_", label.strip()).upper()


def existing_labels(details: ReceiptDetails) -> dict[tuple[int, int], list[str]]:
    existing: dict[tuple[int, int], list[str]] = {}
    for label in details.labels:
        existing.setdefault((label.line_id, label.word_id), []).append(label.label)
    return existing


def review_answer(text: str, word_ids: set[tuple[int, int]], existing: Mapping[tuple[int, int], list[str]]) -> Review:
    """Check an answer against the receipt: what can be kept, what is rejected and why."""
    try:
        parsed = parse_answer(text)
    except AnswerFormatError as exc:
        return Review([], [], 0, 0, str(exc))
    rejected: list[RejectedProposal] = []
    invalid = 0
    for index, problem in parsed.malformed:
        rejected.append(RejectedProposal(None, None, None, "", f"item {index} is malformed: {problem}"))
        invalid += 1
    candidates: dict[tuple[int, int], list[LabelProposal]] = {}
    for p in parsed.proposals:
        label = normalize_label(p.label)
        key = (p.line_id, p.word_id)
        if label not in CORE_LABELS:
            rejected.append(RejectedProposal(p.line_id, p.word_id, p.label, p.reasoning, f"unknown label {p.label!r}"))
            invalid += 1
        elif key not in word_ids:
            reason = f"no word [{p.line_id}:{p.word_id}] on this receipt"
            rejected.append(RejectedProposal(p.line_id, p.word_id, label, p.reasoning, reason))
            invalid += 1
        elif key in existing:
            reason = f"word already labeled {', '.join(existing[key])} (context only)"
            rejected.append(RejectedProposal(p.line_id, p.word_id, label, p.reasoning, reason))
        else:
            candidates.setdefault(key, []).append(p.model_copy(update={"label": label}))
    accepted: list[LabelProposal] = []
    for key, group in candidates.items():
        labels = sorted({p.label for p in group})
        if not labels_may_share_a_word(labels):
            for p in group:
                reason = f"conflicting labels for one word: {', '.join(labels)}"
                rejected.append(RejectedProposal(key[0], key[1], p.label, p.reasoning, reason))
                invalid += 1
            continue
        kept: set[str] = set()
        for p in group:  # one label item per permitted label; a repeated label is a duplicate
            if p.label in kept:
                rejected.append(
                    RejectedProposal(key[0], key[1], p.label, p.reasoning, "duplicate of an earlier proposal")
                )
                continue
            kept.add(p.label)
            accepted.append(p)
    accepted.sort(key=lambda p: (p.line_id, p.word_id, p.label))
    total = len(parsed.proposals) + len(parsed.malformed)
    return Review(accepted, rejected, invalid, total, None)


def build_labeling_graph(
    llm: Runnable[Any, Any], *, model_name: str, options: LabelingOptions | None = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the workflow around `llm` (a `ChatOllama` in production, any chat model in tests)."""
    opts = options or LabelingOptions()

    def build_prompt(state: LabelingState) -> dict[str, Any]:
        details = state["details"]
        existing = existing_labels(details)
        messages = prompts.initial_messages(details, existing)
        chars = prompts.prompt_chars(messages)
        logger.debug("prompt: %d words, %d characters", len(details.words), chars)
        return {
            "existing": existing,
            "messages": messages,
            "prompt_chars": chars,
            **fresh_counters(),
            "accepted": [],
            "rejected": [],
        }

    def validate(state: LabelingState) -> tuple[dict[str, Any], list[str]]:
        details = state["details"]
        word_ids = {(w.line_id, w.word_id) for w in details.words}
        review = review_answer(state["answer_text"], word_ids, state["existing"])
        return {"accepted": review.accepted, "rejected": review.rejected}, _answer_errors(state, review, opts)

    def build_labels(state: LabelingState) -> dict[str, Any]:
        return {"labels": _pending_labels(state, opts)}

    return build_answer_graph(
        LabelingState,
        llm=llm,
        options=opts,
        prepare=("build_prompt", build_prompt),
        needs_call=lambda state: _unlabeled(state) > 0,  # nothing left to label: no call at all
        check=("validate", validate),
        finish=("build_labels", build_labels),
        repair_prompt=prompts.repair_prompt,
        name="receipt_label",
    )


def _unlabeled(state: LabelingState) -> int:
    return sum((w.line_id, w.word_id) not in state["existing"] for w in state["details"].words)


def _answer_errors(state: LabelingState, review: Review, opts: LabelingOptions) -> list[str]:
    """Why the answer needs a repair (or fails); empty when it is kept."""
    if review.unusable is not None:
        return cut_answer_errors(state, [review.unusable])
    if review.invalid >= max(opts.repair_min_invalid, math.ceil(opts.repair_invalid_fraction * review.total)):
        return [
            f"{review.invalid} of {review.total} items are invalid",
            *(r.describe() for r in review.rejected if not r.reason.startswith(("duplicate", "word already"))),
        ]
    if review.total == 0 and state.get("repair_calls", 0) < opts.max_repair_calls:
        unlabeled = _unlabeled(state)
        # an empty list for a receipt with words to label is the typical lazy answer: ask once more,
        # and accept an empty list the second time (some receipts have nothing to label)
        if unlabeled >= opts.repair_min_unlabeled_for_empty:
            return [f"the answer labels no word, but {unlabeled} words have no label yet"]
    return []


def _pending_labels(state: LabelingState, opts: LabelingOptions) -> list[ReceiptWordLabel]:
    details = state["details"]
    proposed_by = PROPOSED_BY_PREFIX + state["model_name"]
    now = datetime.now(UTC).isoformat()
    return [
        ReceiptWordLabel(
            image_id=details.receipt.image_id,
            receipt_id=details.receipt.receipt_id,
            line_id=p.line_id,
            word_id=p.word_id,
            label=p.label,
            reasoning=" ".join(p.reasoning.split())[: opts.max_reasoning_chars],
            timestamp_added=now,
            validation_status=ValidationStatus.PENDING,
            label_proposed_by=proposed_by,
        )
        for p in state["accepted"]
    ]
