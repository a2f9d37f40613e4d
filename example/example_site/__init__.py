from __future__ import annotations

# Load the Celery app whenever Django starts, so that shared tasks (dj-triggers'
# handle_event) are bound to it.
from example_site.celery import app as celery_app

__all__ = ["celery_app"]
