"""Properties of answer validation: whatever the model answers, what is kept is safe to write."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receipt_label import CORE_LABELS
from receipt_label.graph import review_answer
from receipt_label.taxonomy import labels_may_share_a_word

pytestmark = pytest.mark.unit

WORDS = {(line, word) for line in range(1, 6) for word in range(1, 5)}
EXISTING = {(1, 1): ["MERCHANT_NAME"], (3, 2): ["TAX"]}

ids = st.integers(min_value=-2, max_value=8)
labels = st.one_of(st.sampled_from(list(CORE_LABELS)), st.text(max_size=12), st.sampled_from(["tax", "Grand Total"]))
items = st.one_of(
    st.fixed_dictionaries({"line_id": ids, "word_id": ids, "label": labels, "reasoning": st.text(max_size=20)}),
    st.dictionaries(st.sampled_from(["line_id", "word_id", "label", "reasoning", "x"]), st.one_of(ids, labels)),
    st.integers(),
    st.none(),
)
answers = st.one_of(
    st.builds(lambda xs: json.dumps({"labels": xs}), st.lists(items, max_size=25)),
    st.text(max_size=40),
    st.builds(json.dumps, st.one_of(st.lists(items, max_size=3), st.dictionaries(st.text(max_size=5), st.integers()))),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers)
def test_kept_proposals_are_always_writable(answer: str) -> None:
    review = review_answer(answer, WORDS, EXISTING)
    if review.unusable is not None:
        assert review.accepted == [] and review.rejected == []
        return
    per_word: dict[tuple[int, int], list[str]] = {}
    for p in review.accepted:
        per_word.setdefault((p.line_id, p.word_id), []).append(p.label)
    for labels in per_word.values():  # one label per word, or a pair the taxonomy permits, never repeated
        assert len(labels) == len(set(labels)) and labels_may_share_a_word(labels), labels
    for p in review.accepted:
        assert (p.line_id, p.word_id) in WORDS
        assert (p.line_id, p.word_id) not in EXISTING
        assert p.label in CORE_LABELS
    # every item of the answer is either kept or rejected with a reason
    assert len(review.accepted) + len(review.rejected) == review.total
    assert all(r.reason for r in review.rejected)


def test_every_item_is_accounted_for_in_a_mixed_answer() -> None:
    answer: dict[str, Any] = {
        "labels": [
            {"line_id": 2, "word_id": 1, "label": "DATE", "reasoning": "date"},
            {"line_id": 2, "word_id": 1, "label": "DATE", "reasoning": "again"},
            {"line_id": 9, "word_id": 9, "label": "DATE", "reasoning": "no such word"},
            {"line_id": 1, "word_id": 1, "label": "MERCHANT_NAME", "reasoning": "already labeled"},
            {"word_id": 2},
        ]
    }
    review = review_answer(json.dumps(answer), WORDS, EXISTING)
    assert [(p.line_id, p.word_id, p.label) for p in review.accepted] == [(2, 1, "DATE")]
    assert review.total == 5 and len(review.rejected) == 4
    assert review.invalid == 2  # the unknown word and the malformed item; duplicates and context words are harmless
