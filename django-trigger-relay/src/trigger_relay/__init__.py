"""Transactional outbox for dj-triggers (guarantees §2).

Add ``"trigger_relay"`` to ``INSTALLED_APPS`` after ``"triggers"``, run ``migrate``, then
route triggers to Temporal with ``TRIGGER_RELAY_ROUTES``. See README.md.

The parts (docs/architecture.md): :mod:`.firing` writes a firing in the site's request,
:mod:`.perform` performs it in the worker's activity, :mod:`.worker` is that worker's process,
:mod:`.celery` is the way off Celery; all on :mod:`.conf` (every setting), :mod:`.states`
(the vocabulary) and :mod:`.models` (every model). ``atomicity``, ``context``, ``routing``
and ``adoption`` here are deprecated 0.1 paths.
"""

from __future__ import annotations
