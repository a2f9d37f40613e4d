"""Test-only conditions and actions for the end-to-end workflow tests (test_e2e_workflow.py).

Installed by ``test_settings`` only; never shipped. The actions and conditions append what
they do to a journal file (``$TRIGGER_RELAY_E2E_JOURNAL``), so that a test can see an action
inside its still-open transaction and count attempts across worker crashes.
"""
