"""machine names are unique per owner

Revision ID: 0014_machine_names
Revises: 0013_passkeys
Create Date: 2026-12-07 10:00:00

A unique index on machines (owner_id, name). Databases made before may hold two machines
of one owner with the same name: the oldest keeps it, the others become "name (2)",
"name (3)"... (within the 100-character limit, never a name the owner already uses in any
case). Machines without an owner (NULL) are not affected. The downgrade drops the index
and leaves the names as they are.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_machine_names"
down_revision = "0013_passkeys"
branch_labels = None
depends_on = None

NAME_MAX = 100

machines = sa.table(
    "machines",
    sa.column("id", sa.Integer),
    sa.column("owner_id", sa.Integer),
    sa.column("name", sa.String),
)


def _renames(rows) -> dict[int, str]:
    """id -> new name for every later duplicate, rows ordered by id."""
    used: dict[int, set[str]] = {}
    for _mid, owner_id, name in rows:
        used.setdefault(owner_id, set()).add(name.casefold())
    kept: dict[tuple[int, str], int] = {}
    out: dict[int, str] = {}
    for mid, owner_id, name in rows:
        if (owner_id, name) not in kept:
            kept[(owner_id, name)] = mid
            continue
        n = 1
        while True:
            n += 1
            suffix = f" ({n})"
            candidate = name[: NAME_MAX - len(suffix)] + suffix
            if candidate.casefold() not in used[owner_id]:
                break
        used[owner_id].add(candidate.casefold())
        out[mid] = candidate
    return out


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(machines.c.id, machines.c.owner_id, machines.c.name)
        .where(machines.c.owner_id.is_not(None))
        .order_by(machines.c.id)
    ).all()
    for mid, name in _renames(rows).items():
        bind.execute(machines.update().where(machines.c.id == mid).values(name=name))
    op.create_index("uq_machines_owner_name", "machines", ["owner_id", "name"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_machines_owner_name", table_name="machines")
