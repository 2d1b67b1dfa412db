"""Kubernetes resource quantities (``resource.Quantity``): parsing and canonical formatting.

A quantity is a signed decimal number with an optional suffix: binary SI (``Ki`` … ``Ei``),
decimal SI (``n u m k M G T P E``) or a decimal exponent (``e3``, ``E-2``). Parsing rounds any
value finer than one nano-unit up to ``1n``, as the API server does, and remembers which family
the suffix came from so that formatting can write the value back in its canonical form: the
largest suffix of that family that keeps the number an integer (``1.5Gi`` → ``1536Mi``,
``0.5`` → ``500m``, ``1000`` stays ``1k``…). The API server stores quantities in this canonical
form, so ``kubectl get -o yaml`` shows ``1536Mi`` for ``1.5Gi``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_UP, Decimal, InvalidOperation, localcontext
from typing import Literal

from k3py.errors import K3pyError

Format = Literal["DecimalSI", "BinarySI", "DecimalExponent"]

FORMAT_REGEX = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
ERR_FORMAT = f"quantities must match the regular expression '{FORMAT_REGEX}'"
ERR_NUMERIC = "unable to parse numeric part of quantity"
ERR_SUFFIX = "unable to parse quantity's suffix"

_DECIMAL_SUFFIXES: dict[str, int] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_BINARY_SUFFIXES: dict[str, int] = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_BY_EXPONENT = {exp: suffix for suffix, exp in _DECIMAL_SUFFIXES.items()}
_BINARY_BY_POWER = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_EXPONENT = re.compile(r"^[eE][+-]?[0-9]+$")
_NANO = Decimal("1e-9")
# Enough digits for any quantity a user can write (the API server caps at 2^63 nano-units).
_PRECISION = 80


class QuantityError(K3pyError, ValueError):
    """A string that is not a Kubernetes quantity; the message is the API server's."""


@dataclass(frozen=True)
class Quantity:
    """A parsed quantity: its exact value and the suffix family it was written in."""

    value: Decimal
    format: Format = "DecimalSI"

    @classmethod
    def parse(cls, text: str | int | float) -> Quantity:
        return _parse(text)

    def __str__(self) -> str:
        return format_quantity(self.value, self.format)

    def round_up(self, exponent: int) -> Quantity:
        """Round away from zero to ``10**exponent`` (defaulting rounds requests to milli)."""
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            step = Decimal(1).scaleb(exponent)
            rounded = self.value.quantize(step, rounding=ROUND_UP)
            return Quantity(rounded.normalize() if rounded else Decimal(0), self.format)


def parse_quantity(text: str | int | float) -> Decimal:
    """The exact value of a quantity (``"1.5Gi"`` → ``Decimal(1610612736)``)."""
    return _parse(text).value


def format_quantity(value: Decimal, fmt: Format = "DecimalSI") -> str:
    """Canonical text for ``value`` in the given suffix family, as the API server writes it."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        if value == 0:
            return "0"
        if fmt == "BinarySI" and (-1024 < value < 1024 or value != value.to_integral_value()):
            # Small or fractional byte counts read better (and exactly) in decimal.
            fmt = "DecimalSI"
        if fmt == "BinarySI":
            return _format_binary(value)
        mantissa, exponent = _canonical_decimal(value)
        if fmt == "DecimalExponent":
            return f"{mantissa}e{exponent}" if exponent else str(mantissa)
        if exponent > 18:
            mantissa *= 10 ** (exponent - 18)
            exponent = 18
        return f"{mantissa}{_DECIMAL_BY_EXPONENT[exponent]}"


def canonical_quantity(text: str | int | float) -> str:
    """Parse and re-format a quantity (``"1.5Gi"`` → ``"1536Mi"``); raises QuantityError."""
    return str(_parse(text))


def _parse(text: str | int | float) -> Quantity:
    if isinstance(text, bool):
        raise QuantityError(ERR_FORMAT)
    if isinstance(text, int):
        text = str(text)
    elif isinstance(text, float):
        text = repr(text)
    if not text:
        raise QuantityError(ERR_FORMAT)
    match = _NUMBER.match(text)
    if match is None:
        raise QuantityError(ERR_FORMAT)
    number, suffix = match.group(0), text[match.end() :]
    if not re.fullmatch(r"[eEinumkKMGTP]*[-+]?[0-9]*", suffix):
        raise QuantityError(ERR_FORMAT)
    fmt: Format
    if suffix in _DECIMAL_SUFFIXES:
        base, exponent, fmt = 10, _DECIMAL_SUFFIXES[suffix], "DecimalSI"
    elif suffix in _BINARY_SUFFIXES:
        base, exponent, fmt = 2, _BINARY_SUFFIXES[suffix], "BinarySI"
    elif _EXPONENT.match(suffix):
        base, exponent, fmt = 10, int(suffix[1:]), "DecimalExponent"
    else:
        raise QuantityError(ERR_SUFFIX)
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        try:
            amount = Decimal(number)
        except InvalidOperation as exc:
            raise QuantityError(ERR_NUMERIC) from exc
        amount = amount.scaleb(exponent) if base == 10 else amount * (2**exponent)
        if amount != 0:
            # Anything finer than a nano-unit is rounded up (away from zero): asking for a
            # sliver of a resource should still get some.
            magnitude = abs(amount).quantize(_NANO, rounding=ROUND_CEILING)
            amount = magnitude if amount > 0 else -magnitude
        if fmt == "BinarySI" and amount == 0:
            fmt = "DecimalSI"
        amount = amount.normalize() if amount else Decimal(0)
    return Quantity(amount, fmt)


def _canonical_decimal(value: Decimal) -> tuple[int, int]:
    """``value == mantissa * 10**exponent`` with an integer mantissa and ``exponent % 3 == 0``."""
    sign, digits, exp = value.normalize().as_tuple()
    assert isinstance(exp, int)
    mantissa = int("".join(map(str, digits)) or "0")
    shift = exp % 3
    mantissa *= 10**shift
    exp -= shift
    return (-mantissa if sign else mantissa), exp


def _format_binary(value: Decimal) -> str:
    number = int(value)
    power = 0
    while power < len(_BINARY_BY_POWER) - 1 and number % 1024 == 0:
        number //= 1024
        power += 1
    return f"{number}{_BINARY_BY_POWER[power]}"


def round_up_milli(text: str | int | float) -> str:
    """Canonical text of a quantity rounded up to milli-units (resource list defaulting)."""
    return str(_parse(text).round_up(-3))
