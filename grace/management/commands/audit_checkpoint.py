"""``manage.py audit_checkpoint``: record the audit chain's head outside the database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grace.audit_checkpoints import CheckpointRefused, audit_checkpoint


class Command(BaseCommand):
    help = (
        "Append the audit chain's head (sequence, hash, time) to the checkpoint file "
        "(GRACE_AUDIT_CHECKPOINT_PATH) and log it as a JSON line (logger grace.audit). "
        "verify_audit_log then fails if that entry is deleted or its hash changes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database", default="default", help="The database alias (default: default)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            done = audit_checkpoint(using=options["database"], source="command")
        except CheckpointRefused as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"the checkpoint file could not be written: {exc}") from None
        if done is None:
            self.stdout.write("The audit log is empty: nothing to checkpoint.")
            return
        record, path = done
        where = f"appended to {path}" if path is not None else "logged only (no checkpoint file)"
        self.stdout.write(
            f"Checkpoint of audit entry {record['sequence']}, hash {record['entry_hash']}: {where}."
        )
