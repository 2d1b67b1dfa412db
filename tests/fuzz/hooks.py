"""Schemathesis hooks for fuzzing the API (loaded through ``SCHEMATHESIS_HOOKS``).

The check fails on any 5xx answer except 503 (deliberate: not ready, try again); watches are
not generated, since a watch streams until its timeout by design.
"""

from __future__ import annotations

from typing import Any

import schemathesis  # type: ignore[import-not-found,unused-ignore]


@schemathesis.check  # type: ignore[misc,unused-ignore]
def no_unexpected_server_error(response: Any, case: Any) -> None:
    code = response.status_code
    if code >= 500 and code != 503:
        where = f"{case.method} {case.formatted_path}"
        raise AssertionError(f"{code} for {where}: {response.text[:300]}")


@schemathesis.hook  # type: ignore[misc,unused-ignore]
def filter_query(context: Any, query: Any) -> bool:
    if not isinstance(query, dict):
        return True
    return str(query.get("watch", "")).lower() not in ("true", "1", "yes")
