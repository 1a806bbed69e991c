"""LangGraph + Ollama labeling of receipt words: one chat call per receipt in the normal case.

from receipt_label import OllamaSettings, create_chat_model, label_receipt
result = label_receipt(details, llm=create_chat_model(OllamaSettings.from_env()))
result.labels     # ReceiptWordLabel, PENDING, label_proposed_by "receipt_label:<model>"
result.rejected   # dropped proposals with .reason
result.llm_calls  # 1 normally

judge_receipt(details, llm=...)  # VALID / INVALID / NEEDS_REVIEW for the PENDING labels of this pipeline
"""

from receipt_label.answer import ANSWER_JSON_SCHEMA
from receipt_label.budget import TimeBudget, time_budget
from receipt_label.config import OllamaSettings, SettingsError
from receipt_label.errors import (
    LabelingError,
    LLMAuthError,
    LLMError,
    LLMModelNotFoundError,
    LLMOutputError,
    LLMRateLimitError,
    LLMRequestError,
    LLMTransientError,
    TimeBudgetExceededError,
)
from receipt_label.graph import PROPOSED_BY_PREFIX, LabelingOptions, build_labeling_graph
from receipt_label.labeler import label_receipt, tracing_enabled
from receipt_label.llm import check_endpoint, create_chat_model
from receipt_label.state import LabelingResult, RejectedProposal
from receipt_label.taxonomy import CORE_LABELS
from receipt_label.validation import JUDGEMENT_JSON_SCHEMA, JudgingOptions, JudgingResult, judge_receipt

__all__ = [
    "ANSWER_JSON_SCHEMA",
    "CORE_LABELS",
    "JUDGEMENT_JSON_SCHEMA",
    "PROPOSED_BY_PREFIX",
    "JudgingOptions",
    "JudgingResult",
    "LLMAuthError",
    "LLMError",
    "LLMModelNotFoundError",
    "LLMOutputError",
    "LLMRateLimitError",
    "LLMRequestError",
    "LLMTransientError",
    "LabelingError",
    "LabelingOptions",
    "LabelingResult",
    "OllamaSettings",
    "RejectedProposal",
    "SettingsError",
    "TimeBudget",
    "TimeBudgetExceededError",
    "build_labeling_graph",
    "check_endpoint",
    "create_chat_model",
    "judge_receipt",
    "label_receipt",
    "time_budget",
    "tracing_enabled",
]
