"""ApiToken now lives in the core (grace 0003 takes over its table and its rows): this
drops it from the chat app's state only."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0004_seed_security_rules"),
        ("grace", "0003_apitoken"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ApiToken")],
            database_operations=[],
        ),
    ]
