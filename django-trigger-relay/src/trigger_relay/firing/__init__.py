"""Writing a firing, in the site's request (guarantees §2.2, §2.3): the ``Event.fired``
receiver that replaces dj-triggers' own (:mod:`.receivers`, with :mod:`.takeover` finding
every receiver that still reaches Celery), the route of the firing's trigger (:mod:`.routes`,
the one place that rule lives) and, on the Temporal route, the outbox row in the site's
transaction (:mod:`.outbox`), its context checked first (:mod:`.context`, :mod:`.atomicity`)."""
