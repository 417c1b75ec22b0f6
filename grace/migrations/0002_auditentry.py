# The audit log: an unmanaged model whose table this migration creates, with triggers
# that refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) in the database itself.

from django.db import migrations, models

TABLE = "grace_auditentry"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: UPDATE refused'); END""",
    f"""CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: DELETE refused'); END""",
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS {TABLE}_no_update",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_delete",
]

POSTGRES_TRIGGERS = [
    f"""CREATE OR REPLACE FUNCTION {TABLE}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{TABLE} is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$""",
    f"""CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {TABLE}_refuse()""",
    f"""CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_refuse()""",
]
POSTGRES_DROP = [
    f"DROP TRIGGER IF EXISTS {TABLE}_no_update ON {TABLE}",
    f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}",
    f"DROP FUNCTION IF EXISTS {TABLE}_refuse()",
]


def triggers_sql(vendor):
    """(create, drop) statements for ``vendor``; empty for others (the chain still
    detects tampering there)."""
    if vendor == "sqlite":
        return SQLITE_TRIGGERS, SQLITE_DROP
    if vendor == "postgresql":
        return POSTGRES_TRIGGERS, POSTGRES_DROP
    return [], []


INDEXES = {"grace_audit_created_idx": "created", "grace_audit_action_idx": "action",
           "grace_audit_request_idx": "request_id"}


def create_table(apps, schema_editor):
    model = apps.get_model("grace", "AuditEntry")
    schema_editor.create_model(model)  # skips db_index on an unmanaged model: added here
    for name, field in INDEXES.items():
        schema_editor.add_index(model, models.Index(fields=[field], name=name))
    create, _ = triggers_sql(schema_editor.connection.vendor)
    for statement in create:
        schema_editor.execute(statement, params=None)


def drop_table(apps, schema_editor):
    model = apps.get_model("grace", "AuditEntry")
    _, drop = triggers_sql(schema_editor.connection.vendor)
    for statement in drop:
        schema_editor.execute(statement, params=None)
    schema_editor.delete_model(model)


class Migration(migrations.Migration):

    dependencies = [
        ('grace', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditEntry',
            fields=[
                ('sequence', models.BigIntegerField(editable=False, primary_key=True, serialize=False)),
                ('created', models.DateTimeField(db_index=True, editable=False)),
                ('actor', models.CharField(blank=True, max_length=150)),
                ('action', models.CharField(db_index=True, max_length=64)),
                ('resource', models.CharField(blank=True, max_length=255)),
                ('payload', models.JSONField(blank=True, default=dict)),
                ('request_id', models.CharField(blank=True, db_index=True, max_length=64)),
                ('previous_hash', models.CharField(max_length=64)),
                ('entry_hash', models.CharField(max_length=64, unique=True)),
            ],
            options={
                'verbose_name': 'audit entry',
                'verbose_name_plural': 'audit log',
                'db_table': 'grace_auditentry',
                'ordering': ['-sequence'],
                'managed': False,
            },
        ),
        migrations.RunPython(create_table, drop_table),
    ]
