"""The admin in a real browser: ``make test-browser``."""

from __future__ import annotations
