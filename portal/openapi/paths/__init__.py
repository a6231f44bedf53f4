"""The JSON routes, one entry per Flask rule and method (see docs/openapi.md to add one).

Keys are Flask rules exactly as in `app.url_map` (`<int:issue_id>`, `<agent_id>`); path
parameters and their 404 are added by `spec.build`. WebSocket routes are not HTTP operations
and are left out (docs/terminal.md describes them). One table per feature; `common` holds
the schemas several of them share.
"""

from __future__ import annotations

from portal.openapi.paths import accounts, community, files, machines, operations, terminal

PATHS: dict[str, dict[str, dict]] = {
    **accounts.PATHS,
    **machines.PATHS,
    **terminal.PATHS,
    **community.PATHS,
    **operations.PATHS,
    **files.PATHS,
}
