from django.db import models


class Note(models.Model):
    """The one row the anchor's endpoint inserts."""

    text = models.CharField(max_length=4000)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.text[:40]
