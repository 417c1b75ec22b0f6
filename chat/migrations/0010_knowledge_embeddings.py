"""Knowledge entries keep their embedding (a float32 vector) and the model it came from.

The vectors themselves are computed outside migrations (``chat.knowledge``: on ingest,
after every ``migrate``, and by ``manage.py reembed_knowledge``), with the configured
backend. On SQLite the FTS5 update trigger now fires only when the title or the body
changes, so storing an embedding does not rewrite the full-text index; and since SQLite
adds these columns by rebuilding the table, which drops its triggers, the migration makes
them again (and rebuilds the index) both ways. A later migration that rebuilds
``chat_knowledgeentry`` on SQLite must do the same.
"""

from django.db import migrations, models

TRIGGERS = [
    "CREATE TRIGGER IF NOT EXISTS chat_knowledge_ai AFTER INSERT ON chat_knowledgeentry BEGIN "
    "INSERT INTO chat_knowledge_fts(rowid, title, body) VALUES (new.id, new.title, new.body); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS chat_knowledge_ad AFTER DELETE ON chat_knowledgeentry BEGIN "
    "INSERT INTO chat_knowledge_fts(chat_knowledge_fts, rowid, title, body) "
    "VALUES ('delete', old.id, old.title, old.body); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS chat_knowledge_au AFTER UPDATE {columns}ON chat_knowledgeentry "
    "BEGIN "
    "INSERT INTO chat_knowledge_fts(chat_knowledge_fts, rowid, title, body) "
    "VALUES ('delete', old.id, old.title, old.body); "
    "INSERT INTO chat_knowledge_fts(rowid, title, body) VALUES (new.id, new.title, new.body); "
    "END",
    "INSERT INTO chat_knowledge_fts(chat_knowledge_fts) VALUES ('rebuild')",
]


def _triggers(columns):
    """SQLite adds these columns by rebuilding the table, which drops its triggers:
    make them again (the update one for ``columns`` only) and rebuild the index."""

    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "sqlite":
            return
        schema_editor.execute("DROP TRIGGER IF EXISTS chat_knowledge_au")
        for statement in TRIGGERS:
            schema_editor.execute(statement.format(columns=columns))

    return run


def _nothing(apps, schema_editor):
    pass


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0009_message_alternatives"),
    ]

    operations = [
        # Backwards this runs last, after the columns are gone: 0002's triggers again.
        migrations.RunPython(_nothing, _triggers("")),
        migrations.AddField(
            model_name="knowledgeentry",
            name="embedding",
            field=models.BinaryField(
                blank=True,
                null=True,
                help_text="The vector of title and body (float32, little-endian).",
            ),
        ),
        migrations.AddField(
            model_name="knowledgeentry",
            name="embedding_model",
            field=models.CharField(
                blank=True,
                default="",
                editable=False,
                max_length=200,
                help_text="The model the embedding came from (e.g. wordllama:l2_supercat_256); "
                "empty: not embedded yet.",
            ),
        ),
        migrations.RunPython(_triggers("OF title, body "), _nothing),
    ]
