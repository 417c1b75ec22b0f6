"""ApiToken moves from the chat app to the core: the same rows, the same ids.

The model's state moves here (chat 0005 drops it from chat's state without touching the
table); the table is renamed chat_apitoken -> grace_apitoken, and the content type is
relabelled so permissions and admin history entries keep pointing at the tokens.
"""

from django.conf import settings
from django.db import migrations, models
import django.db.models.deletion


def relabel_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    types = ContentType.objects.using(db)
    if not types.filter(app_label="grace", model="apitoken").exists():
        types.filter(app_label="chat", model="apitoken").update(app_label="grace")


def unlabel_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    types = ContentType.objects.using(db)
    if not types.filter(app_label="chat", model="apitoken").exists():
        types.filter(app_label="grace", model="apitoken").update(app_label="chat")


class Migration(migrations.Migration):

    dependencies = [
        ("grace", "0002_auditentry"),
        ("chat", "0004_seed_security_rules"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiToken",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(blank=True, max_length=100)),
                        ("prefix", models.CharField(help_text="The start of the token, to tell it apart.", max_length=16)),
                        ("key_hash", models.CharField(editable=False, max_length=64, unique=True)),
                        ("created", models.DateTimeField(auto_now_add=True)),
                        ("last_used", models.DateTimeField(blank=True, null=True)),
                        ("revoked", models.DateTimeField(blank=True, help_text="Set to revoke the token.", null=True)),
                        ("user", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="api_tokens", to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        "verbose_name": "API token",
                        "ordering": ["-created"],
                        "db_table": "chat_apitoken",
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="apitoken", table=None),
        migrations.RunPython(relabel_content_type, unlabel_content_type),
    ]
