"""``manage.py verify_audit_log``: walk the audit chain and compare it with the
checkpoints kept outside the database; exit 1 naming the first bad entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grace.audit import Checkpoint, audit_verify
from grace.audit_checkpoints import checkpoint_path, checkpoints_read


class Command(BaseCommand):
    help = (
        "Check every audit entry: sequence without gaps, each previous_hash equal to the "
        "hash of the entry before, each entry_hash the HMAC of its fields with the audit key "
        "(GRACE_AUDIT_KEY), and the chain holding every checkpoint of the checkpoint file "
        "(GRACE_AUDIT_CHECKPOINT_PATH) with the same hash. Exits non-zero naming the first "
        "entry that breaks the chain."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database", default="default", help="The database alias (default: default)."
        )
        parser.add_argument(
            "--checkpoints",
            metavar="PATH",
            type=Path,
            default=None,
            help="The checkpoint file (default: GRACE_AUDIT_CHECKPOINT_PATH); it must exist.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        checkpoints: list[Checkpoint] = []
        path = options["checkpoints"]
        explicit = path is not None
        path = path if explicit else checkpoint_path(using)
        if path is None:
            self.stderr.write(
                "No checkpoint file (GRACE_AUDIT_CHECKPOINT_PATH): the newest entries could "
                "be deleted, or the chain re-hashed with the key, without this showing."
            )
        else:
            try:
                read = checkpoints_read(path)
            except FileNotFoundError:
                if explicit:
                    raise CommandError(f"checkpoint file {path} does not exist") from None
                self.stderr.write(f"No checkpoints yet: {path} does not exist.")
            except OSError as exc:
                raise CommandError(f"checkpoint file {path} cannot be read: {exc}") from None
            else:
                checkpoints = read.checkpoints
                for note in read.notes:
                    self.stderr.write(f"{path}: {note}")
        report = audit_verify(using=using, checkpoints=checkpoints)
        if report.problem is not None:
            raise CommandError(
                f"{report.problem} (the {report.checked} entries before it are intact)"
            )
        anchored = (
            f"; holds all {report.checkpoints} checkpoints of {path} (newest: entry "
            f"{report.newest_checkpoint})"
            if report.checkpoints
            else "; no checkpoints"
        )
        plain = (
            f" ({report.plain} plain entries from before the keyed chain)" if report.plain else ""
        )
        self.stdout.write(
            f"Audit log intact: {report.checked} entries{plain}; head sequence "
            f"{report.head_sequence}, hash {report.head_hash}{anchored}."
        )
