"""Money: integer minor units everywhere; major units with two decimals only when rendered."""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable


def as_minor(value: object) -> int:
    """An amount from the database as an exact int (MySQL's SUM() returns a Decimal); no floats."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"money must be integer minor units, got {value!r}")
    if value is None:
        return 0
    if isinstance(value, Decimal):
        if value != value.to_integral_value():
            raise ValueError(f"money must be whole minor units, got {value}")
        return int(value)
    return int(value)  # int, or a numeric string from a driver


def format_minor(amount: object, currency: str | None = None) -> str:
    """1234567 -> '12,345.67' (with ' BDT' when a currency is given), by integer arithmetic."""
    minor = as_minor(amount)
    major, cents = divmod(abs(minor), 100)
    text = f"{'-' if minor < 0 else ''}{major:,}.{cents:02d}"
    return f"{text} {currency}" if currency else text


def format_totals(totals: dict[str, int]) -> str:
    """Totals per currency, e.g. '2,500.00 BDT; 10.00 USD' ('-' when there are none)."""
    if not totals:
        return "-"
    return "; ".join(format_minor(amount, currency) for currency, amount in sorted(totals.items()))


def add_totals(totals: dict[str, int], rows: Iterable[tuple[str, object]]) -> dict[str, int]:
    """Add (currency, amount_minor) pairs into `totals` (exact ints) and return it."""
    for currency, amount in rows:
        totals[currency] = totals.get(currency, 0) + as_minor(amount)
    return totals
