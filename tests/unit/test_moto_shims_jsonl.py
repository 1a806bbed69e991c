"""Shim 8 (local_pipeline/moto_shims.py): moto reads ``ReaderConfig.InputType: JSONL`` as AWS documents it.

The reading rules on their own, then moto's own parser and transformer factory with the shim
installed and after it is removed. tests/integration/test_moto_shims_jsonl_run.py runs a
Distributed Map over a JSONL object in moto end to end.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEventException
from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader import item_reader_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_output_transformer import (
    transformer_factory,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.reader_config.input_type import (
    InputType,
)
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

from local_pipeline.moto_shims import (
    ITEM_READER_FAILED,
    JsonlReadError,
    installed,
    read_jsonl_items,
)

pytestmark = pytest.mark.unit

ORIGINAL_FACTORY = transformer_factory.resource_output_transformer_for


def jsonl_map_definition(**reader_config: Any) -> str:
    return json.dumps(
        {
            "StartAt": "Map",
            "States": {
                "Map": {
                    "Type": "Map",
                    "ItemReader": {
                        "Resource": "arn:aws:states:::s3:getObject",
                        "ReaderConfig": {"InputType": "JSONL", **reader_config},
                        "Parameters": {"Bucket": "b", "Key": "manifests/run/receipts.jsonl"},
                    },
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                        "StartAt": "Item",
                        "States": {"Item": {"Type": "Pass", "End": True}},
                    },
                    "End": True,
                }
            },
        }
    )


def find_components(root: Any, kind: type) -> list[Any]:
    """Every instance of ``kind`` in a parsed moto program (its components' attributes, depth first)."""
    found: list[Any] = []
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen or isinstance(node, str | bytes | int | float | bool) or node is None:
            continue
        seen.add(id(node))
        if isinstance(node, kind):
            found.append(node)
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list | tuple | set):
            pending.extend(node)
        elif type(node).__module__.startswith("moto.stepfunctions.parser"):
            pending.extend(vars(node).values() if hasattr(node, "__dict__") else ())
    return found


# ---- the reading rules ------------------------------------------------------------------------------
def test_each_line_is_one_item_in_file_order() -> None:
    body = '{"image_id":"a","receipt_id":1}\n{"image_id":"b","receipt_id":2}\n'
    assert read_jsonl_items(body) == [{"image_id": "a", "receipt_id": 1}, {"image_id": "b", "receipt_id": 2}]


def test_the_terminating_newline_adds_no_item_and_an_empty_file_has_none() -> None:
    assert read_jsonl_items('{"n":1}') == read_jsonl_items('{"n":1}\n') == [{"n": 1}]
    assert read_jsonl_items("") == []
    assert read_jsonl_items("\n") == []


def test_blank_and_whitespace_only_lines_are_no_items_and_crlf_is_accepted() -> None:
    assert read_jsonl_items('{"n":1}\r\n\r\n  \t\n{"n":2}\r\n') == [{"n": 1}, {"n": 2}]


def test_lines_split_at_newline_only_not_at_other_unicode_line_breaks() -> None:
    value = "a\u2028b\x0bc\x1cd"  # str.splitlines() would cut this string into four
    assert read_jsonl_items(json.dumps({"v": value}, ensure_ascii=False) + "\n") == [{"v": value}]


def test_any_json_value_is_an_item() -> None:
    assert read_jsonl_items('1\n"two"\n[3]\nnull\n') == [1, "two", [3], None]


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ('{"n":1}\n{"n":\n', 2),
        ('{"n":1}\n\n[{"n":2},\n', 3),  # blank lines still count as lines
        ('[{"n":1},\n{"n":2}]\n', 1),  # a JSON array spread over lines is not JSON Lines
        ('{"n":1} {"n":2}\n', 1),  # two values on one line
    ],
)
def test_a_line_that_is_not_json_is_an_error_naming_the_line(body: str, line: int) -> None:
    with pytest.raises(JsonlReadError, match=f"^line {line} of the JSONL file is not valid JSON: ") as raised:
        read_jsonl_items(body)
    assert raised.value.line == line


def test_max_items_stops_reading_so_later_lines_are_never_parsed() -> None:
    body = '{"n":1}\n\n{"n":2}\n{"n":3}\nnot json\n'
    assert read_jsonl_items(body, max_items=2) == [{"n": 1}, {"n": 2}]
    assert read_jsonl_items(body, max_items=3) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert read_jsonl_items(body, max_items=0) == []
    with pytest.raises(JsonlReadError, match=r"^line 5 "):
        read_jsonl_items(body, max_items=4)


# ---- moto with and without the shim --------------------------------------------------------------
def test_moto_rejects_jsonl_without_the_shim() -> None:
    # Fails once moto learns JSONL: then check its reading against the rules above and drop shim 8.
    with pytest.raises(ValueError, match="'JSONL' is not a valid InputTypeValue"):
        AmazonStateLanguageParser.parse(jsonl_map_definition())


def test_the_shim_patches_the_name_item_reader_decl_calls_and_restores_it() -> None:
    with installed():
        assert item_reader_decl.resource_output_transformer_for is not ORIGINAL_FACTORY
        assert transformer_factory.resource_output_transformer_for is item_reader_decl.resource_output_transformer_for
        program, _ = AmazonStateLanguageParser.parse(jsonl_map_definition(MaxItems=5))
        (reader,) = find_components(program, item_reader_decl.ItemReader)
        assert type(reader.resource_output_transformer).__name__ == "ResourceOutputTransformerJsonl"
        json_reader = item_reader_decl.resource_output_transformer_for(input_type=InputType("JSON"))
        assert type(json_reader).__name__ == "ResourceOutputTransformerJson"  # other types: moto's own
    assert item_reader_decl.resource_output_transformer_for is ORIGINAL_FACTORY
    assert transformer_factory.resource_output_transformer_for is ORIGINAL_FACTORY
    with pytest.raises(ValueError, match="'JSONL' is not a valid InputTypeValue"):
        InputType("JSONL")


def _evaluate(body: str, max_items: int) -> list[Any]:
    """Run the JSONL transformer as ItemReader does: resource output, then the reader config, on the stack."""
    transformer = item_reader_decl.resource_output_transformer_for(input_type=InputType("JSONL"))
    env = SimpleNamespace(
        stack=[body, {"InputType": "JSONL", "MaxItemsValue": max_items}],
        next_state_name="Map",
        event_history_context=SimpleNamespace(source_event_id=7),
    )
    transformer._eval_body(env)
    (items,) = env.stack
    return list(items)


def test_the_transformer_reads_the_body_moto_fetched_and_honours_max_items() -> None:
    with installed():
        assert _evaluate('{"n":1}\n{"n":2}\n{"n":3}\n', max_items=100_000_000) == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert _evaluate('{"n":1}\n{"n":2}\n{"n":3}\n', max_items=2) == [{"n": 1}, {"n": 2}]


def test_a_bad_line_fails_the_map_with_states_item_reader_failed() -> None:
    with installed(), pytest.raises(FailureEventException) as raised:
        _evaluate('{"n":1}\n{"n":\n', max_items=100_000_000)
    error, cause = raised.value.extract_error_cause_pair() or (None, None)
    assert error == ITEM_READER_FAILED == "States.ItemReaderFailed"
    assert cause is not None and cause.startswith("line 2 of the JSONL file is not valid JSON")
