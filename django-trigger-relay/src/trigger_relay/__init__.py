"""Transactional outbox for dj-triggers (guarantees §2).

Add ``"trigger_relay"`` to ``INSTALLED_APPS`` after ``"triggers"``, run ``migrate``, then
route triggers to Temporal with ``TRIGGER_RELAY_ROUTES``. See README.md.
"""

from __future__ import annotations
