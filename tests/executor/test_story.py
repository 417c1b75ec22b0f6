"""The tasks of one request on the admin's request page."""

from __future__ import annotations

import pytest

from executor.models import TaskRecord
from executor.services import task_cancel
from grace.request_id import request_id_reset, request_id_set
from grace.request_story import request_story
from tests.executor import tasks


@pytest.mark.django_db(databases=["default", "metrics"])
def test_the_request_page_lists_the_tasks_the_request_enqueued(executor_options) -> None:
    token = request_id_set("rid-story")
    try:
        waiting = tasks.add.enqueue(1, 2)
        cancelled = tasks.noop.enqueue()
    finally:
        request_id_reset(token)
    tasks.noop.enqueue()  # another request's
    task_cancel(task_id=cancelled.id)

    story = request_story(request_id="rid-story")

    assert [t.id for t in story.found_by_source["tasks"]] == [waiting.id, cancelled.id]
    [section] = [s for s in story.sections if s.name == "tasks"]
    assert section.title == "Tasks enqueued"
    rows = [[cell.text for cell in row] for row in section.rows]
    assert [row[:4] for row in rows] == [["add", waiting.id, "READY", 0],
                                         ["noop", cancelled.id, "CANCELLED", 0]]
    pk = TaskRecord.objects.get(id=waiting.id).pk
    assert section.rows[0][0].url.endswith(f"/executor/taskrecord/{pk}/change/")
    timeline = [m.text for m in story.timeline if m.source == "task"]
    assert timeline == ["add enqueued", "noop enqueued", "noop CANCELLED after 0 attempt(s)"]
