"""The reply path's hot statements in plain SQL, written once per database vendor (the
stages in ``chat.stages`` and ``chat.store`` run them): the ownership check, the history,
the row inserts, the conversation's touch and the knowledge-gap upsert; and
``statements_commit``, which sends a transaction's statements at once (PostgreSQL). The
ORM spent more time building these statements than the database spent running them (about
0.7 ms against 0.05 ms for the history on SQLite). They say exactly what
``Conversation.objects.owned_by``, ``Message.objects.transcript`` and ``bulk_create`` say;
the tests compare them.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from django.db import connections
from django.utils import timezone

from chat.models import Conversation, KnowledgeGap, Message
from grace.auth import Owner

Statement = tuple[str, list[Any]]
"""A statement's SQL and its parameters."""


def _table(model: Any) -> str:
    return str(connections["default"].ops.quote_name(model._meta.db_table))


def _uuid_param(value: uuid.UUID) -> Any:
    """A UUID as the database stores it (a hex string on SQLite, a uuid elsewhere)."""
    return Conversation._meta.pk.get_db_prep_value(value, connections["default"])  # type: ignore[union-attr]


def _owned(owner: Owner, conversation_id: uuid.UUID) -> tuple[str, list[Any]] | None:
    """The ``WHERE`` of ``Conversation.objects.owned_by(owner).filter(pk=...)`` and its
    parameters; None when the owner can own nothing."""
    if owner.user_id is not None:
        return "id = %s AND user_id = %s", [_uuid_param(conversation_id), owner.user_id]
    if owner.session_key:
        return (
            "id = %s AND user_id IS NULL AND session_key = %s",
            [_uuid_param(conversation_id), owner.session_key],
        )
    return None


def conversation_owned(*, owner: Owner, conversation_id: uuid.UUID) -> bool:
    """``Conversation.objects.owned_by(owner).filter(pk=conversation_id).exists()``."""
    owned = _owned(owner, conversation_id)
    if owned is None:
        return False
    where, params = owned
    sql = f"SELECT 1 FROM {_table(Conversation)} WHERE {where} LIMIT 1"  # noqa: S608
    with connections["default"].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def conversation_touch(*, owner: Owner, conversation_id: uuid.UUID, now: Any) -> bool:
    """``owned_by(owner).filter(pk=conversation_id).update(updated=now)``: whether the
    owner's conversation is there (and now updated)."""
    statement = conversation_touch_statement(
        owner=owner, conversation_id=conversation_id, now=now)
    if statement is None:
        return False
    with connections["default"].cursor() as cursor:
        cursor.execute(*statement)
        return cursor.rowcount > 0


def conversation_touch_statement(
    *, owner: Owner, conversation_id: uuid.UUID, now: Any
) -> Statement | None:
    """``conversation_touch``'s ``UPDATE`` and its parameters; None when the owner can own
    nothing."""
    owned = _owned(owner, conversation_id)
    if owned is None:
        return None
    where, params = owned
    updated = Conversation._meta.get_field("updated").get_db_prep_save(
        now, connections["default"])
    sql = f"UPDATE {_table(Conversation)} SET updated = %s WHERE {where}"  # noqa: S608
    return sql, [updated, *params]


def rows_insert(objs: list[Any]) -> None:
    """``bulk_create(objs)`` for models whose every field has its value already (no
    database defaults, no auto fields, no signals): one ``INSERT`` with all the rows."""
    with connections["default"].cursor() as cursor:
        cursor.execute(*rows_insert_statement(objs))


def rows_insert_statement(objs: list[Any]) -> Statement:
    """``rows_insert``'s ``INSERT`` and its parameters."""
    model = type(objs[0])
    connection = connections["default"]
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = f"INSERT INTO {_table(model)} ({columns}) VALUES " + ", ".join([row] * len(objs))  # noqa: S608
    params = [
        field.get_db_prep_save(getattr(obj, field.attname), connection)
        for obj in objs
        for field in fields
    ]
    return sql, params


def statements_batch_supported() -> bool:
    """Whether ``statements_commit`` can send a transaction at once here: PostgreSQL with
    client-side binding (Django's default; ``server_side_binding`` sends one statement a
    message), outside any transaction."""
    connection = connections["default"]
    return (
        connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and not connection.settings_dict.get("OPTIONS", {}).get("server_side_binding")
    )


def statements_commit(statements: list[Statement]) -> list[list[tuple[Any, ...]]]:
    """Run ``statements`` as one transaction sent in one message (``BEGIN; ...; COMMIT``,
    PostgreSQL's simple query protocol: one round trip where Django's transaction costs
    one per statement and two more for ``BEGIN`` and ``COMMIT``); each one's rows, in
    order. On an error nothing of it is committed: it is rolled back and raised. Only
    where ``statements_batch_supported()``."""
    sql = "; ".join(["BEGIN", *(statement[0] for statement in statements), "COMMIT"])
    params = [param for statement in statements for param in statement[1]]
    connection = connections["default"]
    results: list[list[tuple[Any, ...]]] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            cursor.nextset()  # BEGIN's
            for _ in statements:
                results.append(cursor.fetchall() if cursor.description else [])
                cursor.nextset()
    except BaseException:
        try:  # leave the connection idle, not in a failed transaction
            if connection.connection is not None and not connection.connection.closed:
                connection.connection.rollback()
        except Exception:
            connection.close()
        raise
    return results


def commit_refused(exc: BaseException) -> bool:
    """Whether ``exc``, raised by ``statements_commit``, is the database's refusal (an
    error it reported: the transaction rolled back, nothing of it is in), not a lost
    connection, after which whether it committed is unknown."""
    sqlstate = getattr(exc.__cause__, "sqlstate", None) or getattr(exc, "sqlstate", None)
    return bool(sqlstate) and not str(sqlstate).startswith("08")


def recent_transcript(
    conversation_id: uuid.UUID, limit: int, *, owner: Owner | None = None
) -> list[tuple[str, str]] | None:
    """``(role, content)`` of the conversation's last ``limit`` messages, newest first:
    ``Message.objects.filter(conversation_id=...).transcript(newest_first=True)``.

    With ``owner``: in the same statement, only if the conversation is the owner's; None
    when it is not (an owned conversation without messages costs a second statement)."""
    message = _table(Message)
    owned_sql, owned_params = "", []
    if owner is not None:
        owned = _owned(owner, conversation_id)
        if owned is None:
            return None
        owned_sql = f"AND EXISTS (SELECT 1 FROM {_table(Conversation)} WHERE {owned[0]}) "  # noqa: S608
        owned_params = owned[1]
    sql = (
        f"SELECT m.role, m.content FROM {message} m "  # noqa: S608
        f"LEFT OUTER JOIN {message} r ON m.reply_to_id = r.id "
        f"WHERE m.conversation_id = %s AND NOT m.superseded {owned_sql}"
        "ORDER BY COALESCE(r.created, m.created) DESC, "
        "CASE WHEN m.role = %s THEN 0 ELSE 1 END DESC, m.created DESC, m.id DESC LIMIT %s"
    )
    with connections["default"].cursor() as cursor:
        cursor.execute(sql, [_uuid_param(conversation_id), *owned_params, "user", limit])
        rows = [(role, content) for role, content in cursor.fetchall()]
    if owner is not None and not rows and not conversation_owned(
        owner=owner, conversation_id=conversation_id
    ):
        return None
    return rows


def knowledge_gap_record(*, question: str, domain: str, request_id: str) -> None:
    """One more time ``question`` was asked and not answered: a new ``KnowledgeGap``, or
    the existing one counted up (and open again). One ``INSERT ... ON CONFLICT`` (SQLite
    3.24+, PostgreSQL): two replies asking a new question at once count twice, where an
    update-then-insert let the second fail on the unique hash (and lose its exchange)."""
    with connections["default"].cursor() as cursor:
        cursor.execute(*knowledge_gap_statement(
            question=question, domain=domain, request_id=request_id))


def knowledge_gap_statement(*, question: str, domain: str, request_id: str) -> Statement:
    """``knowledge_gap_record``'s statement and its parameters."""
    normalized = " ".join(question.lower().split())
    digest = hashlib.sha256(normalized.encode()).hexdigest()
    connection = connections["default"]
    now = KnowledgeGap._meta.get_field("last_asked").get_db_prep_save(
        timezone.now(), connection
    )
    table = _table(KnowledgeGap)
    sql = (
        f"INSERT INTO {table} (question, question_hash, domain, times_asked, first_asked, "  # noqa: S608
        "last_asked, last_request_id, resolved) VALUES (%s, %s, %s, 1, %s, %s, %s, %s) "
        f"ON CONFLICT (question_hash) DO UPDATE SET times_asked = {table}.times_asked + 1, "
        "last_asked = excluded.last_asked, last_request_id = excluded.last_request_id, "
        "resolved = excluded.resolved"
    )
    resolved = KnowledgeGap._meta.get_field("resolved").get_db_prep_save(False, connection)
    return sql, [question, digest, domain, now, now, request_id[:64], resolved]
