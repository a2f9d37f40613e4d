"""The add-on's words for states, outcomes and skip reasons (``trigger_relay.states``) are the
schema's and the documents': the live CHECK constraint on ``trigger_relay_outbox.state`` and
docs/contract.md's lists. The daemon's enums are checked against the same constraint and
documents on the Rust side, so the two meet there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from django.db import connection

from trigger_relay import admin
from trigger_relay.models import OutboxRow
from trigger_relay.perform import core as perform
from trigger_relay.states import ROW_SKIP_REASONS
from trigger_relay.states import Outcome
from trigger_relay.states import SkipReason
from trigger_relay.states import State

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
STATE_CONSTRAINT = "trigger_relay_outbox_state_valid"


def words(members: Iterable[str]) -> list[str]:
    return [str(member) for member in members]


def _outside_parentheses(text: str) -> str:
    """``text`` without what stands in parentheses, nested ones included."""
    kept, depth = [], 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0:
            kept.append(char)
    return "".join(kept)


def _paragraph(text: str, start: str) -> str:
    """The paragraph of ``text`` that begins with ``start``."""
    (paragraph,) = [block for block in text.split("\n\n") if block.startswith(start)]
    return paragraph[len(start) :]


def documented_states() -> list[str]:
    """``states `pending → dispatched → done | skipped | failed | cancelled``` ("Outbox
    table")."""
    (spelled,) = re.findall(r"states\s+`([^`]+)`", CONTRACT.read_text())
    return re.findall(r"[a-z_]+", spelled)


def documented_outcomes() -> list[str]:
    """``{"outcome": "done"/"skipped", ...}``, perform_firing's result ("Activities")."""
    (spelled,) = re.findall(r'"outcome": ((?:"[a-z_]+"/?)+)', CONTRACT.read_text())
    return re.findall(r"[a-z_]+", spelled)


def documented_skip_reasons() -> list[str]:
    """The paragraph "Skip reasons: a, b (what b means), c ..." under "Activities"."""
    listed = _outside_parentheses(_paragraph(CONTRACT.read_text(), "Skip reasons:"))
    return [word.strip(" \n.") for word in listed.split(",")]


def constraint_states() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'trigger_relay_outbox'::regclass AND conname = %s",
            [STATE_CONSTRAINT],
        )
        (definition,) = (row[0] for row in cursor.fetchall())
    # CHECK ((state = ANY (ARRAY['pending'::text, 'dispatched'::text, ...])))
    return re.findall(r"'([a-z_]+)'::text", definition)


@pytest.mark.django_db
def test_the_states_are_the_check_constraint_s() -> None:
    assert constraint_states() == words(State)


def test_the_states_are_the_documented_ones() -> None:
    assert documented_states() == words(State)


def test_the_outcomes_are_the_documented_ones_and_states() -> None:
    assert documented_outcomes() == words(Outcome)
    assert set(Outcome) <= set(State)


def test_the_skip_reasons_are_the_documented_ones() -> None:
    documented = documented_skip_reasons()
    assert len(documented) == len(set(documented)), documented
    assert set(documented) == set(SkipReason)


def test_the_add_on_s_modules_use_the_vocabulary() -> None:
    """The names that other modules and sites import are the vocabulary's members."""
    assert OutboxRow.State is State
    assert perform.NOT_HANDLED is SkipReason.NOT_HANDLED
    assert perform.WORKFLOW_MISMATCH is SkipReason.WORKFLOW_MISMATCH
    assert admin.SKIP_REASONS == ROW_SKIP_REASONS
    assert SkipReason.WORKFLOW_MISMATCH not in ROW_SKIP_REASONS
    assert set(ROW_SKIP_REASONS) == set(SkipReason) - {SkipReason.WORKFLOW_MISMATCH}


def test_members_are_their_words() -> None:
    """Each member compares, prints and formats as its word, as the plain strings did."""
    for member in (*State, *Outcome, *SkipReason):
        assert isinstance(member, str)
        assert member == member.value
        assert str(member) == f"{member}" == "%s" % member == member.value  # noqa: UP031
