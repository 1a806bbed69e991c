"""Every key string of the single table, built and parsed in one place (formats in docs/data-layer.md).

==================  ====================  ==================================================  ====================
entity              PK                    SK                                                  TYPE
==================  ====================  ==================================================  ====================
Receipt             IMAGE#<image_id>      RECEIPT#00001                                       RECEIPT
ReceiptLine         IMAGE#<image_id>      RECEIPT#00001#LINE#00001                            RECEIPT_LINE
ReceiptWord         IMAGE#<image_id>      RECEIPT#00001#LINE#00001#WORD#00001                 RECEIPT_WORD
ReceiptWordLabel    IMAGE#<image_id>      RECEIPT#00001#LINE#00001#WORD#00001#LABEL#<LABEL>   (none)
==================  ====================  ==================================================  ====================

``TYPE`` is the partition key of the GSITYPE index, which lists receipts (``TYPE = RECEIPT``). Lines
and words carry it too (written once, at load). Labels carry no ``TYPE``, so a new label is written
to the table and GSI3 only (2 write units, not 3); readers recognise a label by its sort key
(:func:`is_label_sk`). Label items written by earlier versions carry ``TYPE = RECEIPT_WORD_LABEL``
and are read the same way.

Labels carry GSI3 keys so reviewers can query by validation status:
``GSI3PK = VALIDATION_STATUS#<status>``,
``GSI3SK = IMAGE#<image_id>#RECEIPT#00001#LINE#00001#WORD#00001#LABEL#<LABEL>``.
Every label the pipeline writes has ``GSI3PK = VALIDATION_STATUS#PENDING``: one index partition key
for all of them (write bound in docs/data-layer.md).
"""

from __future__ import annotations

import re
from typing import Final

ID_WIDTH: Final = 5
MAX_ID: Final = 10**ID_WIDTH - 1

TYPE_RECEIPT: Final = "RECEIPT"
TYPE_RECEIPT_LINE: Final = "RECEIPT_LINE"
TYPE_RECEIPT_WORD: Final = "RECEIPT_WORD"
TYPE_RECEIPT_WORD_LABEL: Final = "RECEIPT_WORD_LABEL"

GSI_TYPE_INDEX: Final = "GSITYPE"
GSI_STATUS_INDEX: Final = "GSI3"


def pad(value: int) -> str:
    return f"{value:0{ID_WIDTH}d}"


def image_pk(image_id: str) -> str:
    return f"IMAGE#{image_id}"


def receipt_sk(receipt_id: int) -> str:
    return f"RECEIPT#{pad(receipt_id)}"


def line_sk(receipt_id: int, line_id: int) -> str:
    return f"{receipt_sk(receipt_id)}#LINE#{pad(line_id)}"


def word_sk(receipt_id: int, line_id: int, word_id: int) -> str:
    return f"{line_sk(receipt_id, line_id)}#WORD#{pad(word_id)}"


def label_sk(receipt_id: int, line_id: int, word_id: int, label: str) -> str:
    return f"{word_sk(receipt_id, line_id, word_id)}#LABEL#{label}"


def validation_status_pk(status: str) -> str:
    return f"VALIDATION_STATUS#{status}"


def validation_status_sk(image_id: str, receipt_id: int, line_id: int, word_id: int, label: str) -> str:
    return f"{image_pk(image_id)}#{label_sk(receipt_id, line_id, word_id, label)}"


_ID = rf"(\d{{{ID_WIDTH}}})"
_PK_RE: Final = re.compile(r"IMAGE#(?P<image_id>[^#]+)")
_SK_RE: Final = re.compile(rf"RECEIPT#{_ID}(?:#LINE#{_ID}(?:#WORD#{_ID}(?:#LABEL#(?P<label>[^#]+))?)?)?")


def parse_pk(pk: str) -> str:
    """``IMAGE#<image_id>`` -> image_id."""
    match = _PK_RE.fullmatch(pk)
    if match is None:
        raise ValueError(f"not an image partition key: {pk!r}")
    return match.group("image_id")


def parse_sk(sk: str) -> tuple[int, int | None, int | None, str | None]:
    """``RECEIPT#r[#LINE#l[#WORD#w[#LABEL#L]]]`` -> (receipt_id, line_id, word_id, label)."""
    match = _SK_RE.fullmatch(sk)
    if match is None:
        raise ValueError(f"not a receipt sort key: {sk!r}")
    receipt, line, word, label = match.groups()
    return (
        int(receipt),
        int(line) if line is not None else None,
        int(word) if word is not None else None,
        label,
    )


def is_label_sk(sk: str) -> bool:
    """True for a label sort key (``RECEIPT#r#LINE#l#WORD#w#LABEL#L``); False for any other string."""
    try:
        return parse_sk(sk)[3] is not None
    except ValueError:
        return False
