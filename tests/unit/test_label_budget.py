"""The time budget of LLM work (receipt_label.budget), as invoke_with_retries and label_receipt apply it."""

from __future__ import annotations

import httpx
import pytest

from receipt_label import LLMTransientError, TimeBudget, TimeBudgetExceededError, label_receipt, time_budget
from receipt_label.budget import current_budget
from receipt_label.llm import _budget_request_hook, invoke_with_retries
from tests.helpers import fixture_receipt
from tests.scripted_chat import ScriptedChatModel, well_formed_answer

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_budget_counts_down_and_refuses_work_that_needs_more_than_is_left() -> None:
    clock = Clock()
    budget = TimeBudget.from_seconds(10, clock=clock)
    budget.require(10, "a call")
    clock.now += 4
    assert budget.remaining() == pytest.approx(6)
    with pytest.raises(TimeBudgetExceededError, match=r"before a call: 6\.0s left, 7\.0s needed"):
        budget.require(7, "a call")


def test_the_budget_is_scoped_to_its_block() -> None:
    budget = TimeBudget.from_seconds(5)
    assert current_budget() is None
    with time_budget(budget):
        assert current_budget() is budget
        with time_budget(None):
            assert current_budget() is None
        assert current_budget() is budget
    assert current_budget() is None


def test_no_chat_call_starts_once_the_budget_is_spent() -> None:
    llm = ScriptedChatModel(answers=['{"labels": []}'])
    with time_budget(TimeBudget.from_seconds(0.5)), pytest.raises(TimeBudgetExceededError) as raised:
        invoke_with_retries(llm, [], min_call_seconds=1.0)
    assert llm.calls == [] and raised.value.attempts == 0


def test_a_transient_failure_is_not_retried_when_the_delay_would_cross_the_deadline() -> None:
    llm = ScriptedChatModel(answers=[httpx.ReadError("reset"), '{"labels": []}'])
    with time_budget(TimeBudget.from_seconds(2.0)), pytest.raises(TimeBudgetExceededError):
        invoke_with_retries(llm, [], retry_delay_seconds=5.0, min_call_seconds=1.0)
    assert len(llm.calls) == 1


def test_without_a_budget_a_transient_failure_is_retried_as_before() -> None:
    llm = ScriptedChatModel(answers=[httpx.ReadError("reset"), '{"labels": []}'])
    _, attempts = invoke_with_retries(llm, [], retry_delay_seconds=0.0)
    assert attempts == 2


def test_a_timeout_when_the_budget_has_run_out_is_the_budget_error_not_a_transient_one() -> None:
    clock = Clock()

    def timed_out(_: object) -> Exception:
        clock.now += 10  # the shortened read timeout fired at the deadline
        return httpx.ReadTimeout("timed out")

    llm = ScriptedChatModel(answers=[timed_out])
    with time_budget(TimeBudget.from_seconds(5, clock=clock)), pytest.raises(TimeBudgetExceededError) as raised:
        invoke_with_retries(llm, [])
    assert not isinstance(raised.value, LLMTransientError)


def test_each_request_timeout_is_cut_to_the_time_left() -> None:
    request = httpx.Request("POST", "http://ollama.invalid/api/chat")
    request.extensions["timeout"] = {"connect": 120.0, "read": 120.0, "write": 120.0, "pool": None}
    with time_budget(TimeBudget.from_seconds(3.0)):
        _budget_request_hook(request)
    assert all(0 < value <= 3.0 for value in request.extensions["timeout"].values())
    untouched = httpx.Request("POST", "http://ollama.invalid/api/chat")
    untouched.extensions["timeout"] = {"connect": 120.0, "read": 120.0, "write": 120.0, "pool": 120.0}
    _budget_request_hook(untouched)
    assert untouched.extensions["timeout"]["read"] == 120.0


def test_the_repair_call_is_not_started_without_time_for_it() -> None:
    """The budget reaches the graph's nodes: an unusable first answer leaves no time for the repair call."""
    details = fixture_receipt("receipt_grocery.json")
    clock = Clock()

    def slow_garbage(_: object) -> str:
        clock.now += 9.5
        return "not json"

    llm = ScriptedChatModel(answers=[slow_garbage, well_formed_answer(details, lambda w: "PRODUCT_NAME")])
    with time_budget(TimeBudget.from_seconds(10, clock=clock)), pytest.raises(TimeBudgetExceededError):
        label_receipt(details, llm=llm)
    assert len(llm.calls) == 1
