"""parse_price: every raw price shape Amazon ships becomes a float or NaN, never an error."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gamerec.data.prices import parse_price

CASES = [
    # 2014 / 2023: numbers
    (19.99, 19.99),
    (25, 25.0),
    (0.0, 0.0),
    (np.float64(7.5), 7.5),
    (np.int64(3), 3.0),
    (-1.0, math.nan),
    (math.nan, math.nan),
    (math.inf, math.nan),
    (10**400, math.nan),
    (True, math.nan),
    # 2018: strings
    ("$19.99", 19.99),
    ("$1,250.00", 1250.0),
    ("$1,234,567.89", 1234567.89),
    (" $8.93 ", 8.93),
    ("\n\t $8.93\n", 8.93),
    ("19.99", 19.99),
    ("$25", 25.0),
    ("$.99", 0.99),
    ("$10.99 - $29.99", 10.99),
    ("$10.99-$29.99", 10.99),
    ("$29.99 - $10.99", 10.99),
    # missing and junk
    ("", math.nan),
    ("   ", math.nan),
    (None, math.nan),
    ("\n\t\t                                     ", math.nan),
    ('<span class="a-size-medium">', math.nan),
    (".a-box-inner{background-color:#fff}#alohaBuyBoxWidget .selected{background-color", math.nan),
    ("\n\n\n<script", math.nan),
    ("$1,25.00", math.nan),
    ("$-5.00", math.nan),
    ("$12.34.56", math.nan),
    ("free", math.nan),
    ("\u0661\u0662", math.nan),  # Arabic-Indic digits are not a US price
    ("$" + "9" * 400, math.nan),
    ([19.99], math.nan),
    ({"price": 1}, math.nan),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_parse_price_table(raw, expected):
    got = parse_price(raw)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)
        assert type(got) is float


def _is_nan_or_price(value: float) -> bool:
    return isinstance(value, float) and (math.isnan(value) or (math.isfinite(value) and value >= 0))


@given(st.one_of(st.none(), st.text(), st.floats(), st.integers(), st.booleans()))
def test_parse_price_never_raises(raw):
    assert _is_nan_or_price(parse_price(raw))


@given(st.text(alphabet="$0123456789,.- \t\n"))
def test_parse_price_on_price_like_text(raw):
    assert _is_nan_or_price(parse_price(raw))


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_formatted_price_round_trips(value):
    for text in ("$%.2f" % value, f"${value:,.2f}", f" ${value:,.2f} - ${value + 1:,.2f} "):
        assert parse_price(text) == float("%.2f" % value)
