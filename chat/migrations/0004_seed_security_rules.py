"""Hunter's starter rules (chat/security_seed.py), editable in the admin afterwards."""

from django.db import migrations


def load(apps, schema_editor):
    from chat.security_seed import security_rules_seed

    security_rules_seed(model=apps.get_model("chat", "SecurityRule"))


def unload(apps, schema_editor):
    from chat.security_seed import SEED_RULES

    apps.get_model("chat", "SecurityRule").objects.filter(
        name__in=[rule["name"] for rule in SEED_RULES]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("chat", "0003_starter_knowledge")]

    operations = [migrations.RunPython(load, unload)]
