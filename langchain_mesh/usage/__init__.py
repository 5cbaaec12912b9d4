"""The usage and cost ledger: one row per call (library and gateway), written off the request path.

    usage:
      path: ./mesh-usage.db      # SQLite, one file in WAL mode (the default)
      # url: "{{env:USAGE_DB_URL}}"   # or any SQLAlchemy URL (postgresql+psycopg://...)
      flush_interval: 1.0        # seconds between writes of the buffered rows
      currency: USD
    prices:                      # per million tokens, overriding the genai-prices dataset
      "openai_compatible:vllm:qwen": {input: 0.2, output: 0.6}

Each row: time, key, user, team, the LLM called, the target that answered (a route's), the operation,
tokens in/out/cached/reasoning, latency, status (ok / error / cancelled), the error's type, and the
cost (NULL when the price is unknown, never 0). ``mesh usage`` prints totals; ``mesh serve`` shows
them at ``/usage`` (admin keys). Modules: :mod:`.ledger` (the writer), :mod:`.layer` (the policy
layer), :mod:`.prices`, :mod:`.report` (the totals).
"""

from .ledger import Ledger, ledger_for
from .report import totals

__all__ = ["Ledger", "ledger_for", "totals"]
