"""Parse Amazon price fields into floats, marking everything that is not a price as missing.

Prices arrive as floats (2014, 2023), as strings like "$19.99", "$1,250.00" or
"$10.99 - $29.99" (2018), and as scraping junk: empty strings, HTML or CSS fragments.
A missing price is a feature in itself, so junk becomes NaN instead of a guess or a crash.
"""

from __future__ import annotations

import math
import numbers
import re

# One amount: "1,250.00" (commas only as whole thousands groups), "19.99", "25", ".99".
_AMOUNT = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
# A whole field: an optional "$", an amount, optionally "- $amount" for a price range.
# re.ASCII keeps \d to 0-9, so other scripts' digits are not read as prices.
_PRICE_RE = re.compile(
    rf"\$?\s*(?P<low>{_AMOUNT})(?:\s*[-\u2013]\s*\$?\s*(?P<high>{_AMOUNT}))?",
    re.ASCII,
)
# Real prices are short; a longer field is HTML/CSS junk, and skipping it early bounds the work.
_MAX_PRICE_CHARS = 64


def parse_price(value: object) -> float:
    """Return `value` as a price in dollars, or `math.nan` when it is not a usable price.

    Numbers are kept when finite and >= 0. Strings may carry a "$", thousands commas,
    surrounding whitespace, and a range "low - high", for which the low end is returned.
    Anything else (None, "", HTML/CSS fragments, lists) gives NaN. Never raises.
    """
    if isinstance(value, bool):  # bool is an int subclass, but True is not a price
        return math.nan
    if isinstance(value, numbers.Real):
        return _valid(value)
    if isinstance(value, str):
        return _parse_text(value)
    return math.nan


def _parse_text(text: str) -> float:
    text = text.strip()
    if not text or len(text) > _MAX_PRICE_CHARS:
        return math.nan
    match = _PRICE_RE.fullmatch(text)
    if match is None:
        return math.nan
    low = _amount(match["low"])
    if match["high"] is not None:
        low = min(low, _amount(match["high"]))  # a reversed range still yields its low end
    return _valid(low)


def _amount(text: str) -> float:
    return float(text.replace(",", ""))


def _valid(number: numbers.Real) -> float:
    """`number` as a float when it is finite and not negative, else NaN."""
    try:
        price = float(number)
    except (OverflowError, ValueError, TypeError):  # e.g. an int too large for a float
        return math.nan
    return price if math.isfinite(price) and price >= 0 else math.nan
