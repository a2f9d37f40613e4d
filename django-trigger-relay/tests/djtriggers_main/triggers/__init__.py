"""Stand-in for dj-triggers' main branch (several actions per trigger); tests only."""

from __future__ import annotations
