"""Prompts: the system instructions (taxonomy and rules), the receipt listing and the repair message.

Every word is shown with its ids as `[<line_id>:<word_id>] <text>`, words separated by two spaces.
When the words have geometry, one prompt line is one printed row of the receipt (top to bottom,
left to right; `receipt_label.layout`), so an item and its price, split by OCR into lines far
apart, share a prompt line; without geometry, one OCR line per prompt line in line order. A word
that already carries labels is followed by `{LABEL, ...}`; it is context only. The prompt grows
linearly with the number of words; the layout adds no characters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from receipt_dynamo import ReceiptDetails, ReceiptWord
from receipt_label.layout import visual_rows
from receipt_label.taxonomy import COMPATIBLE_LABELS, CORE_LABELS

MAX_ERRORS_SHOWN = 40
"""The repair message lists at most this many problems (and says how many more there were)."""

_EXAMPLE = json.dumps(
    {
        "labels": [
            {"line_id": 1, "word_id": 1, "label": "MERCHANT_NAME", "reasoning": "store name at the top"},
            {"line_id": 7, "word_id": 3, "label": "LINE_TOTAL", "reasoning": "price at the end of an item line"},
        ]
    }
)


def _pairs_rule() -> str:
    pairs = sorted(" and ".join(sorted(pair, reverse=True)) for pair in COMPATIBLE_LABELS)
    return (
        f"Only exception: a word may get both {'; '.join(pairs)} (one item each), when it is both, "
        "like the single price of a one-item row."
    )


def system_prompt(labels: Mapping[str, str] = CORE_LABELS) -> str:
    taxonomy = "\n".join(f"- {name}: {definition}" for name, definition in labels.items())
    pairs = _pairs_rule()
    return f"""You label the words of a shopping receipt read by OCR.

Labels (use these names exactly):
{taxonomy}

Rules:
- Each word is shown as [line_id:word_id] text. Each line below is one row of the receipt as printed, top to \
bottom, words left to right; a row can hold words of several OCR lines (an item name and, further right, \
its price). Name a word only by its two ids, exactly as shown. The same text can appear more than once \
(two "$5.00" words are different words): pick the ids of the word you mean.
- Give a word one label, or none: leave out words that fit no label (greetings, separators, barcodes). \
Never invent ids. {pairs}
- Label each word of a multi-word value (every word of the merchant name, an address, a product name).
- A word followed by {{LABEL}} already has that label: use it as context, do not label it again.
- reasoning: one short sentence (at most 12 words) saying why.

Answer with JSON only, no other text, in this form:
{_EXAMPLE}"""


def _clean(text: str) -> str:
    return " ".join(text.split())


def _rows(details: ReceiptDetails) -> tuple[list[list[ReceiptWord]], bool]:
    """The rows the prompt shows, and whether they are printed rows (every word has geometry) or OCR lines."""
    rows = visual_rows(details)
    if rows is not None:
        return rows, True
    by_line: dict[int, list[ReceiptWord]] = {}
    for word in details.words:
        by_line.setdefault(word.line_id, []).append(word)
    return [words for _, words in sorted(by_line.items())], False


def prompt_rows(details: ReceiptDetails) -> list[list[ReceiptWord]]:
    """The rows the prompt shows: printed rows when every word has geometry, else OCR lines in order."""
    return _rows(details)[0]


def _render(word: ReceiptWord, existing: Mapping[tuple[int, int], Sequence[str]]) -> str:
    rendered = f"[{word.line_id}:{word.word_id}] {_clean(word.text)}"
    labels = existing.get((word.line_id, word.word_id))
    if labels:
        rendered += " {" + ", ".join(labels) + "}"
    return rendered


def _listing(rows: list[list[ReceiptWord]], existing: Mapping[tuple[int, int], Sequence[str]]) -> str:
    return "\n".join("  ".join(_render(word, existing) for word in row) for row in rows)


def receipt_listing(details: ReceiptDetails, existing: Mapping[tuple[int, int], Sequence[str]]) -> str:
    """One prompt line per row: `[1:1] TRADER  [1:2] JOE'S`; labeled words get ` {LABEL}`."""
    return _listing(prompt_rows(details), existing)


@dataclass(frozen=True)
class ReceiptView:
    """The receipt as a prompt shows it: the listing and what the user message says about it."""

    listing: str
    lines: int
    rows: int
    words: int
    printed: bool

    @property
    def shown(self) -> str:
        return "as printed, one row per line" if self.printed else "one OCR line per line"

    @property
    def size(self) -> str:
        return f"{self.lines} OCR lines in {self.rows} rows and {self.words} words"


def receipt_view(details: ReceiptDetails, existing: Mapping[tuple[int, int], Sequence[str]]) -> ReceiptView:
    """The listing (:func:`receipt_listing`) and its counts; the layout is worked out once."""
    rows, printed = _rows(details)
    lines = len({w.line_id for w in details.words})
    return ReceiptView(_listing(rows, existing), lines, len(rows), len(details.words), printed)


def user_prompt(details: ReceiptDetails, existing: Mapping[tuple[int, int], Sequence[str]]) -> str:
    view = receipt_view(details, existing)
    return (
        f"Receipt with {view.size} ({len(existing)} already labeled), shown {view.shown}. "
        f"Label the words:\n\n{view.listing}"
    )


def initial_messages(details: ReceiptDetails, existing: Mapping[tuple[int, int], Sequence[str]]) -> list[BaseMessage]:
    return [SystemMessage(content=system_prompt()), HumanMessage(content=user_prompt(details, existing))]


def problem_listing(errors: Iterable[str]) -> str:
    """``- <problem>`` lines, at most :data:`MAX_ERRORS_SHOWN`, then how many more there were."""
    problems = list(errors)
    shown = problems[:MAX_ERRORS_SHOWN]
    more = len(problems) - len(shown)
    listing = "\n".join(f"- {p}" for p in shown)
    if more > 0:
        listing += f"\n- ... and {more} more problems of the same kinds"
    return listing


def repair_prompt(errors: Iterable[str]) -> str:
    return (
        "Your previous answer could not be used:\n"
        f"{problem_listing(errors)}\n\n"
        "Answer again with the complete JSON for the whole receipt (all labels, not only the corrections), "
        "following the rules above: only ids and labels that exist, one label per word (except the permitted "
        "pair). JSON only."
    )


def prompt_chars(messages: Sequence[BaseMessage]) -> int:
    """Characters of all message contents: the basis of the prompt-size estimate (about 4 characters a token)."""
    return sum(len(m.content) if isinstance(m.content, str) else len(json.dumps(m.content)) for m in messages)


def estimate_tokens(chars: int) -> int:
    return -(-chars // 4)
