# The keyed audit chain: each row names the key of its HMAC (``key_id``; empty for the
# plain SHA-256 rows written before), and a keyed ``audit.keyed`` entry, chained from the
# last plain row, marks the transition (grace/audit.py). The table is unmanaged (see
# 0002), so the column is added here by hand; it has a constant default, so neither
# engine rewrites the rows (the triggers that refuse UPDATE do not fire).
#
# Reversing keeps the column (old code leaves it at its default) and every row.

from django.db import migrations, models
from django.utils import timezone

TABLE = "grace_auditentry"


def _columns(schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        return {c.name for c in connection.introspection.get_table_description(cursor, TABLE)}


def add_key_id(apps, schema_editor):
    if "key_id" not in _columns(schema_editor):
        schema_editor.execute(
            f"ALTER TABLE {TABLE} ADD COLUMN key_id varchar(16) NOT NULL DEFAULT ''",
            params=None,
        )
    mark_transition(apps, schema_editor)


def mark_transition(apps, schema_editor):
    """Append the keyed ``audit.keyed`` entry after the plain rows, if any; with it, a
    chain re-hashed without the key (all plain) no longer verifies."""
    from grace.audit import audit_hash, audit_keys, chain_lock

    AuditEntry = apps.get_model("grace", "AuditEntry")
    db = schema_editor.connection.alias
    chain_lock(db)
    head = AuditEntry.objects.using(db).order_by("-sequence").first()
    if head is None or head.key_id:
        return  # an empty chain starts keyed; a keyed one is marked already
    keys = audit_keys()
    row = AuditEntry(
        sequence=head.sequence + 1,
        created=timezone.now(),
        actor="system",
        action="audit.keyed",
        resource="",
        payload={"scheme": "hmac-sha256", "plain_entries": head.sequence},
        request_id="",
        previous_hash=head.entry_hash,
        key_id=keys.current_id,
    )
    row.entry_hash = audit_hash(
        sequence=row.sequence, created=row.created, actor=row.actor, action=row.action,
        resource=row.resource, payload=row.payload, request_id=row.request_id,
        previous_hash=row.previous_hash, key=keys.current, key_id=row.key_id,
    )
    row.save(using=db, force_insert=True)


class Migration(migrations.Migration):

    dependencies = [
        ("grace", "0003_apitoken"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditentry",
            name="key_id",
            field=models.CharField(blank=True, default="", editable=False, max_length=16),
        ),
        migrations.RunPython(add_key_id, migrations.RunPython.noop),
    ]
