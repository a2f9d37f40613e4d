"""Helpers shared by the add-on's tests."""

from __future__ import annotations
