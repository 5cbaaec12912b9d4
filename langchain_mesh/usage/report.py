"""Totals from the ledger, grouped by key, user, team, LLM, target, day, operation or status: what
``mesh usage`` prints and ``/usage/api`` serves (one query, so both always agree).

    totals(mesh.config.usage, by=("key", "day"), since="2026-01-01")
    # [{"key": "batch-job", "day": "2026-01-02", "requests": 12, "errors": 0, "refused": 1,
    #   "input_tokens": 3400, "output_tokens": 800, ..., "cost": 0.0123, "unpriced": 0}, ...]

``cost`` sums the known prices (None when no row of the group had one); ``unpriced`` counts the
answered calls whose price is unknown, so a partial sum never passes for a whole one.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .ledger import TABLE

__all__ = ["totals", "GROUPS"]

#: what a report may group by -> the ledger's column
GROUPS = {"key": "api_key", "user": "user_name", "team": "team", "llm": "llm_id", "target": "target", "day": "day",
          "op": "op", "status": "status"}

_SUMS = ("COUNT(*) AS requests, "
         "SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, "
         "SUM(CASE WHEN status = 'refused' THEN 1 ELSE 0 END) AS refused, "
         "COALESCE(SUM(input_tokens), 0) AS input_tokens, COALESCE(SUM(output_tokens), 0) AS output_tokens, "
         "COALESCE(SUM(cached_tokens), 0) AS cached_tokens, COALESCE(SUM(reasoning_tokens), 0) AS reasoning_tokens, "
         "SUM(cost) AS cost, "
         "SUM(CASE WHEN cost IS NULL AND input_tokens IS NOT NULL THEN 1 ELSE 0 END) AS unpriced, "
         "AVG(latency_ms) AS avg_latency_ms")


def totals(source: Any, by: Sequence[str] = ("key", "llm", "day"), since: Optional[str] = None,
           until: Optional[str] = None) -> list[dict[str, Any]]:
    """Totals per group. ``source``: a ``UsageConfig`` or a SQLite path; ``since``/``until``: days
    (``YYYY-MM-DD``, inclusive)."""
    unknown = [b for b in by if b not in GROUPS]
    if unknown:
        from ..errors import SettingsError

        raise SettingsError(f"cannot group usage by {', '.join(unknown)}; choose from {', '.join(GROUPS)}",
                            ["by"])
    cols = [GROUPS[b] for b in by]
    where, params = [], {}
    if since:
        where.append("day >= :since")
        params["since"] = since
    if until:
        where.append("day <= :until")
        params["until"] = until
    select = ", ".join([f"{c} AS {b}" for c, b in zip(cols, by)] + [_SUMS])
    sql = f"SELECT {select} FROM {TABLE}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if cols:
        sql += " GROUP BY " + ", ".join(cols) + " ORDER BY " + ", ".join(cols)
    names = list(by) + ["requests", "errors", "refused", "input_tokens", "output_tokens", "cached_tokens",
                        "reasoning_tokens", "cost", "unpriced", "avg_latency_ms"]
    out = []
    for row in _query(source, sql, params):
        d = dict(zip(names, row))
        if d["avg_latency_ms"] is not None:
            d["avg_latency_ms"] = round(d["avg_latency_ms"], 3)
        if d["cost"] is not None:
            d["cost"] = round(d["cost"], 9)
        if not cols and not d["requests"]:
            continue
        out.append(d)
    return out


def _query(source: Any, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    url = getattr(source, "url", None)
    if url is not None:
        import sqlalchemy as sa

        engine = sa.create_engine(url.get("usage.url"))
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table(TABLE):
                    return []
                return [tuple(r) for r in conn.execute(sa.text(sql), params)]
        finally:
            engine.dispose()
    import sqlite3
    from pathlib import Path

    path = getattr(source, "path", source)
    if not Path(path).exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone() is None:
            return []
        return db.execute(sql, params).fetchall()
    finally:
        db.close()
