"""Rows for the push and report-email worker tests, inserted with SQLAlchemy Core.

Shared by tests/test_worker_push.py and tests/test_worker_emails.py (not a test module itself).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Sequence

from sqlalchemy import create_engine, insert, select, update
from sqlalchemy.engine import Engine

from ops_lib.schema import (
    guardians, institutions, notification_devices, notifications, push_deliveries,
    report_email_queue,
)
from ops_lib.timeutil import utcnow


def engine_for(url: str) -> Engine:
    return create_engine(url)


def add_guardian(engine: Engine, tokens: Sequence[str] = (), *, active: bool = True,
                 name: str = "Guardian") -> tuple[int, list[int]]:
    """A guardian with one device per token; returns (guardian id, device ids)."""
    with engine.begin() as conn:
        guardian = conn.execute(insert(guardians).values(name=name)).inserted_primary_key[0]
        devices = []
        for token in tokens:
            devices.append(conn.execute(insert(notification_devices).values(
                guardian_id=guardian, token=token, platform="android", is_active=active,
                last_seen_at=utcnow())).inserted_primary_key[0])
    return guardian, devices


def add_delivery(engine: Engine, guardian_id: int, device_id: int, *, title: str = "Arrived",
                 body: str = "Ann arrived at school at 08:01",
                 data: dict | None = None, key: str | None = None) -> int:
    """A fanned-out notification and its pending delivery to one device; returns the delivery id."""
    with engine.begin() as conn:
        notification = conn.execute(insert(notifications).values(
            guardian_id=guardian_id, kind="arrival", title=title, body=body,
            data=data if data is not None else {"student_id": "7", "kind": "arrival"},
            dedupe_key=key or f"test:{guardian_id}:{device_id}:{title}",
            fanout_status="done")).inserted_primary_key[0]
        return conn.execute(insert(push_deliveries).values(
            notification_id=notification, device_id=device_id, status="pending",
            attempts=0)).inserted_primary_key[0]


def add_backlog(engine: Engine, count: int, prefix: str = "bulk") -> None:
    """`count` guardians, each with one device and one pending delivery (set-based inserts)."""
    with engine.begin() as conn:
        first = conn.execute(insert(guardians).values(name=f"{prefix} 0")).inserted_primary_key[0]
        conn.execute(insert(guardians), [{"id": first + i, "name": f"{prefix} {i}"}
                                         for i in range(1, count)])
        ids = list(range(first, first + count))
        conn.execute(insert(notification_devices), [
            {"id": g, "guardian_id": g, "token": f"{prefix}-{g}", "platform": "android",
             "is_active": True} for g in ids])
        conn.execute(insert(notifications), [
            {"id": g, "guardian_id": g, "kind": "arrival", "title": "Arrived", "body": f"#{g}",
             "data": {"n": str(g)}, "dedupe_key": f"{prefix}:{g}", "fanout_status": "done"}
            for g in ids])
        conn.execute(insert(push_deliveries), [
            {"notification_id": g, "device_id": g, "status": "pending", "attempts": 0}
            for g in ids])


def add_institution(engine: Engine, name: str = "Green Valley School", code: str = "GVS",
                    timezone: str = "Asia/Dhaka") -> int:
    with engine.begin() as conn:
        return conn.execute(insert(institutions).values(
            name=name, code=code, timezone=timezone)).inserted_primary_key[0]


def add_report_request(engine: Engine, institution_id: int, *, recipient: str = "head@school.test",
                       report_type: str = "attendance", params: Any = None) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(report_email_queue).values(
            institution_id=institution_id, recipient=recipient, report_type=report_type,
            params=params, status="pending", attempts=0)).inserted_primary_key[0]


def row(engine: Engine, table, row_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(table).where(table.c.id == row_id)).one()


def rows(engine: Engine, table) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(table).order_by(table.c.id)).all()


def make_due(engine: Engine, table) -> None:
    """Simulate the passing of time: every backed-off row is due now."""
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.available_at.isnot(None))
                     .values(available_at=utcnow() - dt.timedelta(seconds=1)))


def result_json(completed) -> dict:
    """The --json object a run printed on stdout."""
    return json.loads(completed.stdout)


def stage_row(result: dict, stage: str) -> dict:
    return next(r for r in result["sections"]["Stages"] if r["stage"] == stage)
