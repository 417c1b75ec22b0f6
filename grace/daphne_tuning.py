"""What Grace changes in the server that runs it, when that server is daphne (Twisted).

On every POST, Twisted parses the ``Content-Type`` header with the standard library's
e-mail header parser (``twisted.web.http._parseContentType``), only to learn whether the
body is a form to decode into ``request.args``, which daphne never reads: it hands the
raw body to the ASGI application. About 30 µs of CPU a request on an idle machine, and a
few per cent of a chat server's throughput under load (docs/benchmarks.md). The parse is
a pure function of the header's bytes, and nearly every request sends one of a handful of
values, so ``content_type_parse_cached`` memoises it (the last 64 values).
"""

from __future__ import annotations

import functools
import sys


def content_type_parse_cached() -> bool:
    """Memoise Twisted's ``Content-Type`` parse, if Twisted's HTTP server is loaded (this
    process is daphne) and not yet done; whether it is now memoised. Changes nothing
    elsewhere (uvicorn, tests, management commands)."""
    module = sys.modules.get("twisted.web.http")
    parse = getattr(module, "_parseContentType", None)
    if parse is None:
        return False
    if not hasattr(parse, "cache_info"):
        module._parseContentType = functools.lru_cache(maxsize=64)(parse)  # type: ignore[union-attr]
    return True
