"""SQLite only: an FTS5 index over KnowledgeEntry (title, body), kept in step by
triggers. PostgreSQL searches with its own full-text functions; other engines need
nothing here."""

from django.db import migrations

FTS_SQL = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS chat_knowledge_fts USING fts5("
    "title, body, content='chat_knowledgeentry', content_rowid='id', "
    "tokenize='porter unicode61')",
    "CREATE TRIGGER IF NOT EXISTS chat_knowledge_ai AFTER INSERT ON chat_knowledgeentry BEGIN "
    "INSERT INTO chat_knowledge_fts(rowid, title, body) VALUES (new.id, new.title, new.body); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS chat_knowledge_ad AFTER DELETE ON chat_knowledgeentry BEGIN "
    "INSERT INTO chat_knowledge_fts(chat_knowledge_fts, rowid, title, body) "
    "VALUES ('delete', old.id, old.title, old.body); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS chat_knowledge_au AFTER UPDATE ON chat_knowledgeentry BEGIN "
    "INSERT INTO chat_knowledge_fts(chat_knowledge_fts, rowid, title, body) "
    "VALUES ('delete', old.id, old.title, old.body); "
    "INSERT INTO chat_knowledge_fts(rowid, title, body) VALUES (new.id, new.title, new.body); "
    "END",
    "INSERT INTO chat_knowledge_fts(chat_knowledge_fts) VALUES ('rebuild')",
]
DROP_SQL = [
    "DROP TRIGGER IF EXISTS chat_knowledge_ai",
    "DROP TRIGGER IF EXISTS chat_knowledge_ad",
    "DROP TRIGGER IF EXISTS chat_knowledge_au",
    "DROP TABLE IF EXISTS chat_knowledge_fts",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "sqlite":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]

    operations = [migrations.RunPython(_run(FTS_SQL), _run(DROP_SQL))]
