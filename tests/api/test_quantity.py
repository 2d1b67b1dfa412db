"""Resource quantities parse and print as the API server's resource.Quantity does."""

from __future__ import annotations

from decimal import Decimal

import pytest

from k3py.cluster.api.quantity import (
    ERR_FORMAT,
    ERR_SUFFIX,
    Quantity,
    QuantityError,
    canonical_quantity,
    format_quantity,
    parse_quantity,
    round_up_milli,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Ki", Decimal(1024)),
        ("1.5Gi", Decimal(1610612736)),
        ("128Mi", Decimal(134217728)),
        ("100m", Decimal("0.1")),
        ("2k", Decimal(2000)),
        ("1M", Decimal(1000000)),
        ("1E", Decimal("1e18")),
        ("5e-3", Decimal("0.005")),
        ("1E3", Decimal(1000)),
        ("-1Gi", Decimal(-1073741824)),
        ("+7", Decimal(7)),
        (".5", Decimal("0.5")),
        ("250n", Decimal("0.00000025")),
        (2, Decimal(2)),
        (0.25, Decimal("0.25")),
    ],
)
def test_parse_value(text: str | int | float, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1.5Gi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1024Mi", "1Gi"),
        ("0.5Ki", "512"),  # below 1Ki binary quantities print in decimal
        ("1.5Ki", "1536"),
        ("0.5", "500m"),
        ("1000", "1k"),
        ("1500", "1500"),
        ("1500m", "1500m"),
        ("0.1m", "100u"),
        ("1e3", "1e3"),
        ("12e6", "12e6"),
        ("129e6", "129e6"),
        ("0", "0"),
        ("0Gi", "0"),
        ("0.0000000001", "1n"),  # finer than nano rounds up
        ("-0.0000000001", "-1n"),
        ("1000E", "1000E"),
        ("-1Gi", "-1Gi"),
        (1, "1"),
    ],
)
def test_canonical_form(text: str | int, canonical: str) -> None:
    assert canonical_quantity(text) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", ERR_FORMAT),
        ("abc", ERR_FORMAT),
        ("1.2.3", ERR_FORMAT),
        ("1e", ERR_SUFFIX),
        ("1K", ERR_SUFFIX),
        ("1Kb", ERR_FORMAT),
    ],
)
def test_parse_errors_use_api_server_messages(text: str, message: str) -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity(text)
    assert str(info.value) == message


def test_format_keeps_family_and_round_up_to_milli() -> None:
    assert format_quantity(Decimal(1073741824), "BinarySI") == "1Gi"
    assert format_quantity(Decimal(15000), "DecimalExponent") == "15e3"
    assert format_quantity(Decimal(1500), "DecimalExponent") == "1500"
    assert format_quantity(Decimal("0.25"), "DecimalSI") == "250m"
    assert round_up_milli("100u") == "1m"
    assert round_up_milli("1.5Gi") == "1536Mi"
    assert str(Quantity.parse("2Gi")) == "2Gi"
    assert Quantity.parse("2Gi").format == "BinarySI"
