"""Anonymous owners are stored as the SHA-256 of their session key, never the key: every
``session_key`` already stored is replaced by its hash. Every row is kept, and an
anonymous visitor keeps their conversations: the new lookup hashes the same cookie.

Irreversible in effect (a hash cannot be turned back into a key): reversing leaves the
hashes in place, which is harmless since the old code never matched them to anyone."""

from __future__ import annotations

import hashlib
import re

from django.db import migrations, models

HASHED = re.compile(r"[0-9a-f]{64}")
BATCH = 1000


def _hash(key: str) -> str:
    return key if HASHED.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()


def hash_session_keys(apps, schema_editor):
    alias = schema_editor.connection.alias
    for name in ("Conversation", "SecurityEvent"):
        model = apps.get_model("chat", name)
        rows = model.objects.using(alias).exclude(session_key="").only("pk", "session_key")
        changed = []
        for row in rows.iterator(chunk_size=BATCH):
            hashed = _hash(row.session_key)
            if hashed != row.session_key:
                row.session_key = hashed
                changed.append(row)
            if len(changed) >= BATCH:
                model.objects.using(alias).bulk_update(changed, ["session_key"])
                changed = []
        if changed:
            model.objects.using(alias).bulk_update(changed, ["session_key"])


class Migration(migrations.Migration):
    dependencies = [("chat", "0006_security_rules_re2")]

    operations = [
        migrations.AlterField(
            model_name="conversation",
            name="session_key",
            field=models.CharField(
                blank=True,
                default="",
                max_length=64,
                help_text="Owner of an anonymous conversation: the SHA-256 of its session key.",
            ),
        ),
        migrations.AlterField(
            model_name="securityevent",
            name="session_key",
            field=models.CharField(
                blank=True,
                max_length=64,
                help_text="The SHA-256 of the anonymous caller's session key.",
            ),
        ),
        migrations.RunPython(hash_session_keys, migrations.RunPython.noop, elidable=False),
    ]
