"""Money as exact decimals: google.type.Money <-> Decimal, rounding to the currency's minor unit
(ISO 4217 via babel's CLDR data), and decimal strings from clients and CSV files. No floats."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache

from babel.numbers import get_currency_precision, is_currency
from google.type import money_pb2

NANOS = Decimal(1_000_000_000)
ZERO = Decimal(0)


@cache
def known_currency(code: str) -> bool:
    """An ISO 4217 code CLDR knows (`EUR`, `JPY`); `XYZ` or `eur` are not."""
    return len(code) == 3 and code.isupper() and is_currency(code)


@cache
def _quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-get_currency_precision(currency))


def round_minor(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half up to the currency's minor unit (2 for EUR, 0 for JPY)."""
    return amount.quantize(_quantum(currency), rounding=ROUND_HALF_UP)


def valid_money(message: money_pb2.Money) -> bool:
    """google.type.Money's own rule: |nanos| < 1e9 and units and nanos of the same sign."""
    if not -999_999_999 <= message.nanos <= 999_999_999:
        return False
    return not ((message.units > 0 and message.nanos < 0)
                or (message.units < 0 and message.nanos > 0))


def to_decimal(message: money_pb2.Money) -> Decimal:
    return Decimal(message.units) + Decimal(message.nanos) / NANOS


def to_money(amount: Decimal, currency: str) -> money_pb2.Money:
    # One decimal operation, then integers (this runs ~10 times per quote line).
    scaled = int(amount.scaleb(9).to_integral_value(rounding=ROUND_HALF_UP))
    units, nanos = divmod(-scaled if scaled < 0 else scaled, 1_000_000_000)
    if scaled < 0:  # toward zero, so units and nanos share a sign
        units, nanos = -units, -nanos
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def parse_decimal(text: str) -> Decimal | None:
    """A finite decimal from text such as `12.50` (None for NaN, Infinity or not a number)."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def from_float(value: float) -> Decimal:
    """A proto double as the decimal its shortest repr shows (1.1, not 1.100000000000000088)."""
    return Decimal(repr(float(value)))
