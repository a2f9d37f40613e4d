"""The admin in a real browser (issue 8, item 6): ``make test-browser``."""

from __future__ import annotations
