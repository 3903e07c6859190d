"""Users of the local stack's sign-in: added by ``meshhook-metrics user add`` and, for the demo, by ``up``.

``up`` creates a demo admin of the demo project and a demo viewer of another project, so that signing in as
each shows what tenancy means: the viewer sees none of the demo project's data.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from meshhook_rt_metrics.demo import DEMO_PROJECT
from meshhook_rt_metrics.localstack.gateway.auth_api import check_password, normalise_email, upsert_user

OTHER_PROJECT = uuid.UUID("00000000-0000-4000-8000-0000000000e1")


@dataclass(frozen=True)
class DemoUser:
    email: str
    password: str
    project: uuid.UUID
    role: str


DEMO_USERS = (
    DemoUser("admin@demo.meshhook.local", "demo-admin-password", DEMO_PROJECT, "admin"),
    DemoUser("viewer@other.meshhook.local", "demo-viewer-password", OTHER_PROJECT, "viewer"),
)


def add_member(
    conn: psycopg.Connection[Any], email: str, password: str, project: uuid.UUID, role: str
) -> uuid.UUID:
    """Create or update a user (password re-hashed) and their membership of ``project``; raises
    ``UserInputError`` for a bad email or password before anything is written."""
    address = normalise_email(email)
    check_password(password)
    with conn.transaction():
        user_id = upsert_user(conn, address, password)
        conn.execute("insert into metrics.projects (id) values (%s) on conflict do nothing", (project,))
        conn.execute(
            "insert into metrics.project_members (project_id, user_id, role) values (%s, %s, %s)"
            " on conflict (project_id, user_id) do update set role = excluded.role",
            (project, user_id, role),
        )
    return user_id


def ensure_demo_users(database_url: str) -> tuple[DemoUser, ...]:
    """The demo's sign-ins, (re)created with their known passwords."""
    with psycopg.connect(database_url) as conn:
        for user in DEMO_USERS:
            add_member(conn, user.email, user.password, user.project, user.role)
    return DEMO_USERS
