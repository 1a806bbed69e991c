"""Graph state and result types.

The state holds the receipt, the messages sent to the model, the model's text and what was made
of it. It never holds credentials: the chat model (with its client and key) is bound into the
graph's nodes when the graph is built, not carried in the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypedDict

from langchain_core.messages import BaseMessage

from receipt_dynamo import ReceiptDetails, ReceiptWordLabel
from receipt_label.answer import LabelProposal

Verdict = Literal["ok", "repair", "fail"]


@dataclass(frozen=True)
class RejectedProposal:
    """A proposal from the model that was dropped, and why. Ids are None for an item that had none."""

    line_id: int | None
    word_id: int | None
    label: str | None
    reasoning: str
    reason: str

    def describe(self) -> str:
        where = f"[{self.line_id}:{self.word_id}]" if self.line_id is not None else "item"
        return f"{where} {self.label or '?'}: {self.reason}"


@dataclass(kw_only=True)
class ChatCallStats:
    """The chat calls behind a result, from the answer loop's counters (``chat_graph.call_stats``).

    llm_calls: HTTP chat calls made (1 normally; 2 with a repair; failed retried attempts count too).
    errors: the problems that caused the repair call, if any. Tokens: as reported by the server
    (Ollama: prompt_eval_count / eval_count), summed over calls.
    """

    llm_calls: int
    model_name: str = ""
    repaired: bool = False
    prompt_chars: int = 0
    errors: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class LabelingResult(ChatCallStats):
    """What `label_receipt` returns, with the chat calls' :class:`ChatCallStats`.

    labels: new `ReceiptWordLabel`s (PENDING), at most one per word, sorted by (line_id, word_id).
    rejected: proposals of the model's final answer that were dropped, each with `.reason`.
    """

    labels: list[ReceiptWordLabel]
    rejected: list[RejectedProposal]


class ChatState(TypedDict, total=False):
    """The keys of the shared answer loop (``receipt_label.chat_graph``)."""

    messages: list[BaseMessage]
    prompt_chars: int
    answer_text: str
    answer_cut: bool  # the server stopped at its output token limit (done_reason "length")
    input_tokens: int  # as reported by the server, summed over calls (0 if it reports none)
    output_tokens: int
    llm_calls: int
    repair_calls: int
    errors: list[str]  # problems of the latest answer that make it unusable or call for a repair
    first_errors: list[str]
    verdict: Verdict


class LabelingState(ChatState, total=False):
    details: ReceiptDetails
    model_name: str
    existing: dict[tuple[int, int], list[str]]  # (line_id, word_id) -> labels the word already has
    accepted: list[LabelProposal]
    rejected: list[RejectedProposal]
    labels: list[ReceiptWordLabel]
