"""Load the starter knowledge set (chat/knowledge/*.md) into every new database.
Later edits to those files reach existing databases with
``manage.py ingest_knowledge``-style reloading: ``knowledge_seed`` is idempotent."""

from django.db import migrations


def load(apps, schema_editor):
    from chat.ingest import knowledge_seed

    knowledge_seed(model=apps.get_model("chat", "KnowledgeEntry"))


def unload(apps, schema_editor):
    from chat.knowledge import STARTER_PREFIX

    apps.get_model("chat", "KnowledgeEntry").objects.filter(
        source__startswith=STARTER_PREFIX
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("chat", "0002_knowledge_fts")]

    operations = [migrations.RunPython(load, unload)]
