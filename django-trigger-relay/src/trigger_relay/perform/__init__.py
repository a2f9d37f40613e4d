"""Performing a firing at its due time, in the Python worker (guarantees §3): the activity
``perform_firing`` (:mod:`.activity`) with its typed input (:mod:`.workflow_input`) and the
site check (:mod:`.site`), the outcome recorded with the actions (:mod:`.outcome`), and
:func:`.core.perform` itself: fresh data, the site's overrides (:mod:`.hooks`), the lock, the
conditions, the actions and their ledger (:mod:`.ledger`); counted by :mod:`.metrics`."""
