"""The answer the model must give: its JSON schema (sent as Ollama's `format`) and the lenient parser.

Ollama constrains generation to `ANSWER_JSON_SCHEMA` (labels restricted to the taxonomy). The
parser does not trust that: it accepts the top-level shape or reports it as wrong, and checks
each item on its own so one malformed item costs that item, not the whole answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from receipt_label.taxonomy import CORE_LABELS

MAX_ANSWER_CHARS = 2_000_000
"""Answers longer than this are not parsed (a runaway generation); they count as unusable."""


def answer_json_schema(key: str, labels: Iterable[str], **fields: dict[str, Any]) -> dict[str, Any]:
    """An answer's JSON schema (Ollama's ``format``): ``{key: [{line_id, word_id, label, **fields}]}``.

    Every item key is required and no other is allowed; ``label`` is one of ``labels``, in their order.
    """
    properties = {
        "line_id": {"type": "integer"},
        "word_id": {"type": "integer"},
        "label": {"type": "string", "enum": list(labels)},
        **fields,
    }
    return {
        "type": "object",
        "properties": {
            key: {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": properties,
                    "required": list(properties),
                    "additionalProperties": False,
                },
            }
        },
        "required": [key],
        "additionalProperties": False,
    }


ANSWER_JSON_SCHEMA: dict[str, Any] = answer_json_schema("labels", CORE_LABELS, reasoning={"type": "string"})


class WordLabelItem(BaseModel):
    """An answer item's word `[line_id:word_id]` and label, as the model wrote them (other keys ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    line_id: int
    word_id: int
    label: str


class LabelProposal(WordLabelItem):
    """One item of the labeling answer: a label the model proposes for the word `[line_id:word_id]`."""

    reasoning: str = ""


@dataclass(frozen=True)
class ParsedAnswer:
    proposals: list[LabelProposal]
    malformed: list[tuple[int, str]]  # (item index, problem)


class AnswerFormatError(ValueError):
    """The answer is not JSON, or not an object with the expected array (`labels`, `judgements`)."""


_FENCE_RE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _embedded_object(text: str) -> Any:
    """The JSON object between the first `{` and the last `}` of `text`, if that parses; else None."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        return json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None


def load_answer_object(text: str, key: str) -> list[Any]:
    """The ``key`` array of the JSON object in the model's text (fenced or wrapped in prose is fine).

    Raises AnswerFormatError when the text is too long, empty, not JSON or has no such array.
    """
    if len(text) > MAX_ANSWER_CHARS:
        raise AnswerFormatError(f"the answer is {len(text)} characters long, more than the limit of {MAX_ANSWER_CHARS}")
    if not text.strip():
        raise AnswerFormatError("the answer is empty")
    fenced = _FENCE_RE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        # Some models (gpt-oss among them) do not always honour `format` and wrap the object in prose.
        data = _embedded_object(body)
        if data is None:
            raise AnswerFormatError(
                f"the answer is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    if not isinstance(data, dict):
        raise AnswerFormatError(
            f'the answer must be a JSON object {{"{key}": [...]}}, got a JSON {type(data).__name__}'
        )
    items = data.get(key)
    if not isinstance(items, list):
        raise AnswerFormatError(f'the answer must have a "{key}" array')
    return items


def item_problems(error: ValidationError) -> str:
    """One line naming each problem of a malformed item."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'item'}: {err['msg']}" for err in error.errors())


def parse_answer(text: str) -> ParsedAnswer:
    """Parse the model's text; raise AnswerFormatError if it cannot be used at all."""
    items = load_answer_object(text, "labels")
    proposals: list[LabelProposal] = []
    malformed: list[tuple[int, str]] = []
    for index, item in enumerate(items):
        try:
            proposals.append(LabelProposal.model_validate(item))
        except ValidationError as exc:
            malformed.append((index, item_problems(exc)))
    return ParsedAnswer(proposals=proposals, malformed=malformed)
