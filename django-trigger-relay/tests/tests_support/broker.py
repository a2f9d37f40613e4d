"""Looking into the test run's Celery queue in Redis (the real broker, no mocks)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings


@dataclass
class QueuedTask:
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    eta: str | None


@dataclass
class CeleryQueue:
    client: redis.Redis
    name: str

    @classmethod
    def from_settings(cls) -> CeleryQueue:
        return cls(
            redis.Redis.from_url(settings.CELERY_BROKER_URL), settings.CELERY_TASK_DEFAULT_QUEUE
        )

    def keys(self) -> list[bytes]:
        """Every Redis key of this run's queue (messages, priorities, bindings)."""
        return list(self.client.scan_iter(match=f"*{self.name}*"))

    def purge(self) -> None:
        keys = self.keys()
        if keys:
            self.client.delete(*keys)

    def tasks(self) -> list[QueuedTask]:
        """The messages waiting in the queue (kombu's Redis transport keeps them in a list
        named after the queue), oldest first."""
        raw = self.client.lrange(self.name, 0, -1)
        tasks = []
        for item in reversed(raw):  # kombu LPUSHes and BRPOPs
            message = json.loads(item)
            body = message["body"]
            if message["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args, kwargs, _embed = json.loads(body)
            headers = message["headers"]
            tasks.append(QueuedTask(headers["task"], args, kwargs, headers.get("eta")))
        return tasks
