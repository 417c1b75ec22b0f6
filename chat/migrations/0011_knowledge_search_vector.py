"""PostgreSQL only: the full-text vector of each knowledge entry, stored and indexed.

Keyword search ranked every entry with ``to_tsvector`` computed at query time, a scan that
parsed every title and body on every question (1.8 ms of database time per search with
the starter knowledge alone, growing with the knowledge). The vector is now a generated
column, ``search_vector`` (title weight A, body weight B, the ``english`` configuration:
what ``chat.knowledge`` ranks with), kept in step by PostgreSQL itself and indexed with
GIN, so a search reads only the entries that share a word with the question.

The column is not a field of ``KnowledgeEntry`` (SQLite searches its FTS5 table, migration
0002), so the ORM never reads or writes it. A later migration that changes the type of
``title`` or ``body`` on PostgreSQL must drop the column first and make it again.
"""

from django.db import migrations

VECTOR = (
    "setweight(to_tsvector('english'::regconfig, COALESCE(title, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, COALESCE(body, '')), 'B')"
)
FORWARD = [
    "ALTER TABLE chat_knowledgeentry ADD COLUMN IF NOT EXISTS search_vector tsvector "
    f"GENERATED ALWAYS AS ({VECTOR}) STORED",
    "CREATE INDEX IF NOT EXISTS chat_knowledge_search ON chat_knowledgeentry "
    "USING GIN (search_vector)",
]
BACKWARD = [
    "DROP INDEX IF EXISTS chat_knowledge_search",
    "ALTER TABLE chat_knowledgeentry DROP COLUMN IF EXISTS search_vector",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("chat", "0010_knowledge_embeddings")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
