"""Kubernetes resource quantities (``"500m"``, ``2``, ``"1Gi"``) as the amounts they stand for."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

_SUFFIXES = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
             "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
             "P": Decimal("1e15"), "E": Decimal("1e18"), "Ki": Decimal(2**10), "Mi": Decimal(2**20),
             "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60)}
_QUANTITY = re.compile(r"^([+-]?[0-9]*\.?[0-9]+)(?:([eE][+-]?[0-9]+)|(" + "|".join(filter(None, _SUFFIXES)) + r")?)$")


def mebibytes(amount: int) -> str:
    """``amount`` bytes as a quantity in whole MiB, rounded up."""
    return f"{-(-amount // 2**20)}Mi"


def quantity(value: Any) -> Decimal | None:
    """The amount a Kubernetes quantity stands for (``"500m"`` and ``0.5`` alike), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    number, exponent, suffix = match.groups()
    try:
        return Decimal(number + (exponent or "")) * _SUFFIXES[suffix or ""]
    except InvalidOperation:
        return None
