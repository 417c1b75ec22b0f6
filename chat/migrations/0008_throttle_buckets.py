"""The throttles' shared state when no Redis is set (chat/throttling.py)."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("chat", "0007_session_key_hashes")]

    operations = [
        migrations.CreateModel(
            name="ThrottleBucket",
            fields=[
                ("bucket", models.CharField(max_length=200, primary_key=True, serialize=False)),
                ("tat", models.BigIntegerField(db_index=True)),
            ],
        ),
    ]
