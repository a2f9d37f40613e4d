"""Leaving Celery (guarantees §2.5): the guard that keeps Celery workers from performing an
adopted firing (:mod:`.guard`), the reader of the firings still waiting in the broker
(:mod:`.broker`) and their adoption into the outbox (:mod:`.adoption`). ``manage.py
trigger_relay_adopt_celery`` and ``trigger_relay_status`` are their commands.

Inside this package ``import celery`` is still Celery itself (imports are absolute)."""
