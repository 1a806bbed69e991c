"""The label taxonomy: every label a word may receive, with the one-line definition shown to the model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import combinations
from types import MappingProxyType

CORE_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "MERCHANT_NAME": "the store or business name, as printed at the top or in a footer",
        "STORE_HOURS": "opening hours or days the store is open",
        "PHONE_NUMBER": "a telephone or fax number, including its separators",
        "WEBSITE": "a web address, domain or email address of the merchant",
        "LOYALTY_ID": "a loyalty, rewards or member card number or identifier",
        "ADDRESS_LINE": "part of the merchant's street address, city, state or postal code",
        "DATE": "the transaction date, in any format",
        "TIME": "the transaction time of day",
        "PAYMENT_METHOD": "how the customer paid: card brand, masked card number, cash, tender type",
        "COUPON": "a coupon or promotional code, or the word naming a coupon line",
        "DISCOUNT": "a discount, markdown or savings amount or the word naming it",
        "PRODUCT_NAME": "a word of the name or description of a purchased item",
        "QUANTITY": "how many units (or what weight) of an item were bought",
        "UNIT_PRICE": "the price of one unit (or per weight unit) of an item",
        "LINE_TOTAL": "the total price of one line item",
        "SUBTOTAL": "the subtotal before tax, or the word SUBTOTAL itself",
        "TAX": "a tax amount, or the word naming the tax line",
        "GRAND_TOTAL": "the final amount due or charged, or the word TOTAL naming it",
    }
)
"""Label -> one-line definition. Iteration order is the order the prompt lists them in."""


COMPATIBLE_LABELS: frozenset[frozenset[str]] = frozenset({frozenset({"UNIT_PRICE", "LINE_TOTAL"})})
"""Pairs of labels one word may carry together; any other two labels on one word conflict.

Only one pair qualifies: on a one-item row the single price is both the unit price and the line
total. Every other pair names different things (a word is either the subtotal or the total, either
a discount or a price), so proposing both is a mistake the model must not get away with.
"""


def labels_may_share_a_word(labels: Iterable[str]) -> bool:
    """True when every two of ``labels`` (distinct names) are a compatible pair."""
    distinct = sorted(set(labels))
    return all(frozenset(pair) in COMPATIBLE_LABELS for pair in combinations(distinct, 2))


def is_core_label(label: str) -> bool:
    return label in CORE_LABELS
