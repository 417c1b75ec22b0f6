"""The cache every process shares (``CACHES["default"]`` when ``REDIS_URL`` is set)."""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache


class RedisCache(DjangoRedisCache):
    """Django's Redis cache whose ``clear()`` deletes only this cache's keys.

    The Redis database is shared with the channel layer: Django's own ``clear()`` runs
    ``FLUSHDB``, which would also drop every websocket's groups and queued messages."""

    def clear(self) -> None:
        client = self._cache.get_client(None, write=True)  # type: ignore[attr-defined]
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{self.key_prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
