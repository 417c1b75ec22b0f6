"""Error log rows coalesce: ``count``, ``last_seen`` and a unique ``fingerprint``.

Every existing row is kept as it is: its own row (fingerprint NULL, so it never
coalesces), seen once, last seen when it was written.
"""

import django.utils.timezone
from django.db import migrations, models
from django.db.models import F


def last_seen_from_created(apps, schema_editor):
    ErrorLog = apps.get_model("grace", "ErrorLog")
    ErrorLog.objects.using(schema_editor.connection.alias).update(last_seen=F("created"))


class Migration(migrations.Migration):
    dependencies = [
        ("grace", "0004_auditentry_key_id"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="errorlog",
            options={
                "ordering": ["-last_seen", "-id"],
                "verbose_name": "error log entry",
                "verbose_name_plural": "error log",
            },
        ),
        migrations.AddField(
            model_name="errorlog",
            name="count",
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name="errorlog",
            name="fingerprint",
            field=models.CharField(blank=True, max_length=64, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="errorlog",
            name="last_seen",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now),
        ),
        migrations.AlterField(
            model_name="errorlog",
            name="created",
            field=models.DateTimeField(auto_now_add=True, db_index=True, verbose_name="first seen"),
        ),
        migrations.RunPython(last_seen_from_created, migrations.RunPython.noop),
    ]
