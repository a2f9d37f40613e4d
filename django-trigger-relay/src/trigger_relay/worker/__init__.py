"""The Python activity worker (``manage.py trigger_relay_worker``): its settings
(:mod:`.settings`, read once at start), its process (:mod:`.process`: connect, serve
``perform_firing`` until SIGTERM, stop cleanly) and its payload codec (:mod:`.codec`). What
it runs, the activity, is :mod:`trigger_relay.perform.core`."""
