"""The service behind every chat edge: ``chat_reply`` streaming, stop, cancellation,
the follow-up tasks, and what learning capture keeps."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from django.db import IntegrityError

from chat.backends.base import ReplyBackend, ReplyRequest, ReplyResult, TokenCallback
from chat.exceptions import ConversationNotFound
from chat.learning import learning_redact, luhn_valid
from chat.models import CausalEvent, KnowledgeGap, LearningRecord, Message
from chat.pipeline import chat_reply
from grace.auth import Owner
from tests.timing import limit, wait_until_async

pytestmark = pytest.mark.usefixtures("roomy_timeouts")

OWNER = Owner(session_key="s" * 32)


class SlowBackend(ReplyBackend):
    """Streams a word every 50 ms, 100 words."""

    async def generate(
        self, request: ReplyRequest, *, on_token: TokenCallback | None = None
    ) -> ReplyResult:
        words = []
        for n in range(100):
            await asyncio.sleep(0.05)
            words.append(f"w{n} ")
            if on_token is not None:
                await on_token(f"w{n} ")
        return ReplyResult(text="".join(words), backend=self.alias)


@pytest.fixture
def slow_backend(chat_config: Any) -> Any:
    chat_config.GRACE_CHAT = {
        **chat_config.GRACE_CHAT,
        "REPLY_BACKENDS": {
            **chat_config.GRACE_CHAT["REPLY_BACKENDS"],
            "slow": {"BACKEND": "tests.chat.test_pipeline.SlowBackend", "OPTIONS": {}},
        },
        "REPLY_BACKEND": "slow",
        "STAGE_TIMEOUTS": {**chat_config.GRACE_CHAT["STAGE_TIMEOUTS"], "respond": 10.0},
        "PIPELINE_DEADLINE": 20.0,
    }
    return chat_config


@pytest.mark.django_db(transaction=True)
async def test_on_token_streams_the_reply(seeded):
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    body = await chat_reply(message="hello", owner=OWNER, on_token=on_token)
    # A reply that is whole at once (the fallback's) comes as one piece.
    assert pieces == [body["response"]]
    assert body["metadata"]["stages"]["respond"] == "ok"


@pytest.mark.django_db(transaction=True)
async def test_a_failing_callback_does_not_stop_the_reply(seeded):
    async def on_token(piece: str) -> None:
        raise ConnectionResetError("client gone")

    body = await chat_reply(message="hello", owner=OWNER, on_token=on_token)
    assert body["response"].startswith("Hello") and body["degraded"] is False


@pytest.mark.django_db(transaction=True)
async def test_stop_stores_the_partial_reply(seeded, slow_backend):
    stop = asyncio.Event()
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 5:
            stop.set()

    started = time.monotonic()
    body = await chat_reply(message="tell me a story", owner=OWNER, on_token=on_token, stop=stop)
    assert time.monotonic() - started < limit(2.0)  # the whole reply takes 5 s
    assert "stopped" in body["metadata"]["flags"] and body["degraded"] is False
    assert body["response"] == "".join(pieces[:5]) == "w0 w1 w2 w3 w4 "
    assert body["metadata"]["backend"] == "slow"
    reply = await Message.objects.aget(pk=body["message_id"])
    assert reply.content == body["response"] and "stopped" in reply.metadata["flags"]
    event = await CausalEvent.objects.aget()
    assert event.outcome == "stopped"


@pytest.mark.django_db(transaction=True)
async def test_cancelling_the_call_stores_what_was_said(seeded, slow_backend):
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    task = asyncio.ensure_future(
        chat_reply(message="a long answer please", owner=OWNER, on_token=on_token)
    )
    await wait_until_async(lambda: len(pieces) >= 3, timeout=5, message="3 pieces streamed")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until_async(Message.objects.filter(role="assistant").aexists, timeout=5,
                           message="the partial reply stored")
    reply = await Message.objects.aget(role="assistant")
    assert reply.content.startswith("w0 w1 w2 ")
    assert "stopped" in reply.metadata["flags"]


@pytest.mark.parametrize(("message", "domain"), [("  ", "all"), ("x" * 4001, "all"), ("hi", "x")])
async def test_unvalidated_input_is_refused(message, domain):
    with pytest.raises(ValueError):
        await chat_reply(message=message, owner=OWNER, domain=domain)


@pytest.mark.django_db(transaction=True)
async def test_conversation_of_another_owner_is_not_found(seeded):
    body = await chat_reply(message="hi", owner=OWNER)
    with pytest.raises(ConversationNotFound):
        await chat_reply(
            message="hi", owner=Owner(session_key="t" * 32),
            conversation_id=body["conversation_id"],
        )


@pytest.mark.django_db(transaction=True)
async def test_followup_tasks_record_learning_and_causality(seeded):
    body = await chat_reply(
        message="Mail me at ada@example.com about card 4111 1111 1111 1111, thanks",
        owner=OWNER,
    )
    record = await LearningRecord.objects.aget()
    assert "ada@example.com" not in record.text and "4111" not in record.text
    # The card never reached learning: Hunter masked it before any stage.
    assert "[EMAIL]" in record.text and "[CARD]" not in record.text
    assert record.sensitivity == "red"
    assert record.redactions["email"] == 1
    assert record.request_id == body["request_id"]
    event = await CausalEvent.objects.aget()
    assert str(event.effect_message_id) == body["message_id"]
    assert str(event.conversation_id) == body["conversation_id"]
    assert event.event_type.startswith("fallback_") and event.outcome in {"answered", "unanswered"}


@pytest.mark.django_db(transaction=True)
async def test_followup_goes_through_the_configured_task_backend(seeded, chat_config):
    """With the executor (the product default) the tasks are queued, not run inline."""
    from executor.models import TaskRecord

    chat_config.TASKS = {
        "default": {"BACKEND": "executor.backend.ExecutorBackend", "QUEUES": ["default"],
                    "OPTIONS": {}}
    }
    body = await chat_reply(message="What is the capital of Peru?", owner=OWNER)
    assert body["metadata"]["stages"]["followup"] == "ok"
    assert await TaskRecord.objects.acount() == 2
    assert await LearningRecord.objects.acount() == 0
    assert await KnowledgeGap.objects.acount() == 1


@pytest.mark.django_db(transaction=True)
async def test_enqueue_failure_is_followup_failed(seeded, chat_config):
    chat_config.TASKS = {
        "default": {"BACKEND": "tests.chat.test_pipeline.BrokenBackend", "QUEUES": [],
                    "OPTIONS": {}}
    }
    body = await chat_reply(message="hello", owner=OWNER)
    assert body["metadata"]["stages"]["followup"] == "error", body
    assert body["metadata"]["stages"]["store"] == "ok", body
    assert "followup_failed" in body["metadata"]["flags"] and body["degraded"] is True
    assert await Message.objects.acount() == 2


EXECUTOR_TASKS = {
    "default": {"BACKEND": "executor.backend.ExecutorBackend", "QUEUES": ["default"],
                "OPTIONS": {}}
}


@pytest.mark.django_db(transaction=True)
async def test_followup_tasks_are_committed_with_the_exchange(seeded, chat_config):
    """One write transaction per exchange: the store's carries the follow-up tasks."""
    from executor.models import TaskRecord

    chat_config.TASKS = EXECUTOR_TASKS
    body = await chat_reply(message="How do I run the executor worker?", owner=OWNER)
    assert body["metadata"]["stages"]["store"] == body["metadata"]["stages"]["followup"] == "ok"
    tasks = [t async for t in TaskRecord.objects.order_by("task_name")]
    assert [t.task_name for t in tasks] == ["causal_track", "learning_capture"]
    assert {t.kwargs["request_id"] for t in tasks} == {body["request_id"]}
    assert tasks[0].kwargs["outcome"] == "answered"  # committed with the stored reply
    assert tasks[0].kwargs["effect_message_id"] == body["message_id"]
    assert await Message.objects.filter(conversation_id=body["conversation_id"]).acount() == 2


@pytest.mark.django_db(transaction=True)
async def test_a_full_queue_costs_the_followups_never_the_exchange(seeded, chat_config):
    """The second task does not fit: neither is kept (never one without the other), the
    exchange is stored all the same, and the reply says followup_failed."""
    from executor.models import TaskRecord

    chat_config.TASKS = {
        "default": {**EXECUTOR_TASKS["default"], "OPTIONS": {"max_pending": 1}}
    }
    body = await chat_reply(message="What is the capital of Peru?", owner=OWNER)
    assert body["metadata"]["stages"]["store"] == "ok", body
    assert body["metadata"]["stages"]["followup"] == "error", body
    assert "followup_failed" in body["metadata"]["flags"] and body["degraded"] is True
    assert await TaskRecord.objects.acount() == 0
    assert await Message.objects.filter(conversation_id=body["conversation_id"]).acount() == 2
    assert await KnowledgeGap.objects.acount() == 1  # the rest of the store's work stays


@pytest.mark.django_db(transaction=True)
async def test_a_failed_store_leaves_the_followups_to_their_own_stage(seeded, chat_config):
    """The store's transaction did not commit: the followup stage enqueues the tasks
    itself (as before one transaction carried both), with the outcome ``not_stored``."""
    from executor.models import TaskRecord

    chat_config.TASKS = EXECUTOR_TASKS
    chat_config.GRACE = {**chat_config.GRACE, "FAULTS": {"store": "error"}}
    body = await chat_reply(message="How do I run the executor worker?", owner=OWNER)
    assert body["metadata"]["stages"]["store"] == "error"
    assert body["metadata"]["stages"]["followup"] == "ok"
    causal = await TaskRecord.objects.aget(task_name="causal_track")
    assert causal.kwargs["outcome"] == "not_stored"
    assert await TaskRecord.objects.acount() == 2
    assert await Message.objects.acount() == 0


class DeletingBackend(ReplyBackend):
    """Deletes the turn's conversation while it produces the reply (the owner deleting it
    in another tab, say)."""

    async def generate(
        self, request: ReplyRequest, *, on_token: TokenCallback | None = None
    ) -> ReplyResult:
        from asgiref.sync import sync_to_async

        from chat.models import Conversation

        await sync_to_async(Conversation.objects.filter(title="doomed").delete)()
        return ReplyResult(text="said to nobody", backend=self.alias)


@pytest.mark.django_db(transaction=True)
async def test_a_conversation_deleted_during_the_turn_stores_nothing_of_it(seeded, chat_config):
    """Neither message nor a follow-up task goes in with the store (on PostgreSQL the
    store's statements are sent at once: the messages' foreign key refuses them); the
    followup stage then enqueues the tasks alone, as ``not_stored``."""
    from chat.models import Conversation
    from executor.models import TaskRecord

    chat_config.TASKS = EXECUTOR_TASKS
    first = await chat_reply(message="hello there", owner=OWNER)
    await Conversation.objects.filter(pk=first["conversation_id"]).aupdate(title="doomed")
    await TaskRecord.objects.all().adelete()
    chat_config.GRACE_CHAT = {
        **chat_config.GRACE_CHAT,
        "REPLY_BACKENDS": {
            **chat_config.GRACE_CHAT["REPLY_BACKENDS"],
            "deleting": {"BACKEND": "tests.chat.test_pipeline.DeletingBackend", "OPTIONS": {}},
        },
        "REPLY_BACKEND": "deleting",
    }
    body = await chat_reply(message="are you there?", owner=OWNER,
                            conversation_id=first["conversation_id"])
    assert body["metadata"]["stages"]["store"] == "error", body
    assert await Message.objects.acount() == 0  # the first exchange went with its conversation
    outcomes = [t.kwargs["outcome"] async for t in TaskRecord.objects.filter(
        task_name="causal_track")]
    assert outcomes == ["not_stored"], body["metadata"]


@pytest.mark.django_db(transaction=True)
def test_statements_commit_sends_a_transaction_at_once_and_keeps_nothing_of_a_failure():
    """PostgreSQL: ``BEGIN; ...; COMMIT`` in one message, each statement's rows back; a
    failing statement rolls back the ones before it and the connection stays usable."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chat.models import Conversation
    from chat.statements import statements_batch_supported, statements_commit

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's simple query protocol (SQLite stores statement by statement)")
    assert statements_batch_supported()
    table = connection.ops.quote_name(Conversation._meta.db_table)
    insert = (f"INSERT INTO {table} (id, session_key, title, domain, created, updated) "
              "VALUES (%s, %s, %s, %s, now(), now()) RETURNING title")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    with CaptureQueriesContext(connection) as sent:
        rows = statements_commit([
            (insert, [ids[0], "k", "one", "all"]),
            (f"UPDATE {table} SET title = %s WHERE id = %s", ["uno", ids[0]]),
            (insert, [ids[1], "k", "two", "all"]),
        ])
    assert rows == [[("one",)], [], [("two",)]]
    assert len(sent) == 1 and sent[0]["sql"].startswith("BEGIN; INSERT")
    with pytest.raises(IntegrityError):
        statements_commit([(insert, [ids[2], "k", "three", "all"]),
                           (insert, [ids[0], "k", "again", "all"])])
    assert set(Conversation.objects.values_list("title", flat=True)) == {"uno", "two"}
    with connection.cursor() as cursor:  # idle again, not in a failed transaction
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    options = connection.settings_dict.setdefault("OPTIONS", {})
    options["server_side_binding"] = True  # one statement a message: statement by statement
    try:
        assert not statements_batch_supported()
    finally:
        del options["server_side_binding"]


@pytest.mark.django_db(transaction=True)
async def test_foreign_conversation_is_refused_when_recall_fails(seeded, chat_config):
    """Inspection leaves the ownership check to recall; when recall fails before it
    checked, the check runs on its own: still a 422, never a reply."""
    body = await chat_reply(message="private note", owner=OWNER)
    chat_config.GRACE = {**chat_config.GRACE, "FAULTS": {"recall": "error"}}
    with pytest.raises(ConversationNotFound):
        await chat_reply(
            message="let me in", owner=Owner(session_key="t" * 32),
            conversation_id=body["conversation_id"],
        )
    assert await Message.objects.filter(conversation_id=body["conversation_id"]).acount() == 2


try:
    from django_tasks.backends.immediate import ImmediateBackend

    class BrokenBackend(ImmediateBackend):
        def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
            raise ConnectionError("queue unreachable")
except ImportError:  # pragma: no cover
    pass


@pytest.mark.parametrize(
    ("text", "sensitivity", "kinds"),
    [
        ("How do I bake bread?", "green", {}),
        ("Write to me at a.b@example.org", "yellow", {"email": 1}),
        ("Call +44 20 7946 0958 tomorrow", "yellow", {"phone": 1}),
        ("my card is 4242-4242-4242-4242", "red", {"card": 1}),
        ("key sk-abcdefghijklmnopqrstuvwx", "red", {"token": 1}),
        ("order 1234 5678 9012 3456 shipped", "green", {}),  # fails Luhn: not a card
    ],
)
def test_learning_redaction_and_sensitivity(text, sensitivity, kinds):
    capture = learning_redact(text)
    assert capture.sensitivity() == sensitivity
    assert dict(capture.redactions) == kinds


def test_luhn():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


@pytest.mark.django_db(transaction=True)
def test_the_reply_paths_sql_says_what_the_orm_says():
    """``chat.statements`` reads with SQL written once; it must match the ORM's meaning."""
    import uuid
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    from chat.models import Conversation
    from chat.statements import conversation_owned, recent_transcript

    user = User.objects.create_user("sql")
    t0 = timezone.now()
    mine = Conversation.objects.create(user=user, title="x", created=t0, updated=t0)
    anon = Conversation.objects.create(session_key=OWNER.session_key, title="y", created=t0,
                                       updated=t0)
    questions = []
    for i in range(4):
        q = Message.objects.create(conversation=mine, role="user", content=f"q{i}",
                                   created=t0 + timedelta(seconds=10 * i))
        Message.objects.create(conversation=mine, role="assistant", content=f"a{i}",
                               reply_to=q, created=t0 + timedelta(seconds=10 * i + 1))
        questions.append(q)
    # The first message answered again after the others: the new reply is its current one.
    Message.objects.filter(reply_to=questions[0]).update(superseded=True)
    Message.objects.create(conversation=mine, role="assistant", content="a0 again",
                           reply_to=questions[0], created=t0 + timedelta(seconds=99))
    for limit_ in (1, 3, 8, 20):
        orm = list(Message.objects.filter(conversation_id=mine.pk)
                   .transcript(newest_first=True).values_list("role", "content")[:limit_])
        assert recent_transcript(mine.pk, limit_) == orm
        # Checked and read in one statement: the owner's only, else None.
        assert recent_transcript(mine.pk, limit_, owner=Owner(user_id=user.pk)) == orm
        assert recent_transcript(mine.pk, limit_, owner=Owner(user_id=user.pk + 1)) is None
        assert recent_transcript(mine.pk, limit_, owner=OWNER) is None
    assert recent_transcript(anon.pk, 5) == []
    assert recent_transcript(anon.pk, 5, owner=OWNER) == []  # the owner's, no messages yet
    assert recent_transcript(anon.pk, 5, owner=Owner(user_id=user.pk)) is None
    assert recent_transcript(uuid.uuid4(), 5, owner=OWNER) is None
    assert recent_transcript(mine.pk, 5, owner=Owner()) is None

    by_user, by_session = Owner(user_id=user.pk), OWNER
    for owner in (by_user, by_session, Owner(session_key="t" * 32), Owner(user_id=user.pk + 1),
                  Owner()):
        for pk in (mine.pk, anon.pk, uuid.uuid4()):
            expected = Conversation.objects.owned_by(owner).filter(pk=pk).exists()
            assert conversation_owned(owner=owner, conversation_id=pk) is expected, (owner, pk)


def test_a_stage_given_up_never_passes_its_commit_point():
    """``StageCancel``: the thread's point of no return and the pipeline's giving up are
    ordered, so after a timeout the pipeline knows whether the stage may still commit."""
    from chat.exceptions import StageAbandoned
    from chat.stagerun import StageCancel

    passed = StageCancel()
    passed.commit_point("the exchange")
    passed.set()
    assert passed.committed == "the exchange"

    given_up = StageCancel()
    given_up.set()
    with pytest.raises(StageAbandoned):
        given_up.commit_point("the exchange")
    assert given_up.committed == ""

    refused = StageCancel()  # the database refused the commit: nothing of it is in
    refused.commit_point("the exchange")
    refused.commit_refused()
    assert refused.committed == ""
    passed.commit_refused()  # the pipeline gave up first and read "the exchange"
    assert passed.committed == "the exchange"
