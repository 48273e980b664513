"""The journal's bookkeeping without a server (core/journal.py): ids kept since the base,
the bound it never exceeds, re-basing on a confirming call, and the error that names the
reachable range. Rewinding sessions through it is tested on a real server in
tests/service/test_journal_rewind.py."""
from __future__ import annotations

import numpy as np

from lstm_service.service.core.journal import Journal, Journals, unreachable

ZEROS = (np.zeros((1, 4), np.float32),)


def state(value: float):
    return (np.full((1, 4), value, np.float32),)


def test_ids_since_the_base_come_back_up_to_any_count_and_truncate():
    journal = Journal(10, state(1.0), None)
    journal.append(np.array([5, 6, 7]))
    journal.append(np.array([8]))
    assert journal.count == 4
    assert journal.ids_to(12).tolist() == [5, 6] and journal.ids_to(12).dtype == np.int64
    journal.truncate(11)
    assert journal.ids_to(11).tolist() == [5]
    assert journal.nbytes() == 4 * 4 + 1 * 4  # the base state plus one 4-byte id


def test_journaling_off_keeps_nothing():
    assert Journals(0, 8).before_commit(None, 3, state(1.0), None, np.array([1]), False, True, False, ZEROS) is None


def test_it_never_holds_more_than_its_bound_and_always_the_whole_last_call():
    policy, journal, steps = Journals(bound=8, per_call=4), None, 0
    for _ in range(10):
        ids = np.arange(4)  # each call as long as a call may be
        journal = policy.before_commit(journal, steps, state(steps), None, ids, False, True, False, ZEROS)
        steps += len(ids)
        assert journal.count <= policy.bound
        assert policy.reachable(journal, steps, steps - len(ids))  # the last call can be undone
        assert not policy.reachable(journal, steps, journal.steps - 1)


def test_a_confirming_call_moves_the_floor_and_takes_no_state():
    policy = Journals(bound=100, per_call=10)
    journal = policy.before_commit(None, 0, ZEROS, None, np.array([1, 2]), False, True, False, ZEROS)
    journal = policy.before_commit(journal, 2, state(2.0), None, np.array([3]), False, True, True, ZEROS)
    assert journal.state is ZEROS and journal.ids_to(3).tolist() == [1, 2, 3]  # the shared base stays
    assert journal.low == 2 and policy.reachable(journal, 3, 2) and not policy.reachable(journal, 3, 1)
    assert unreachable(3, 1, journal, "expected_steps").metadata["reachable_from"] == "2"


def test_confirming_every_step_bases_the_journal_on_the_present_state():
    policy, present = Journals(bound=100, per_call=10), state(3.0)
    journal = policy.confirmed_all(3, present, None)
    assert journal is not None and journal.state is present and journal.count == 0  # shared with the session
    assert policy.reachable(journal, 3, 3) and not policy.reachable(journal, 3, 2)
    assert Journals(bound=0, per_call=10).confirmed_all(3, present, None) is None


def test_a_start_step_counts_from_the_zero_state():
    policy = Journals(bound=100, per_call=10)
    journal = policy.before_commit(None, 7, state(7.0), None, np.array([1]), True, True, False, ZEROS)
    assert journal.steps == 0 and journal.state is ZEROS


def test_a_count_out_of_reach_names_the_reachable_range():
    journal = Journal(4, state(1.0), None)
    behind = unreachable(9, 2, journal, "expected_steps")
    assert behind.reason == "OUTSIDE_JOURNAL"
    assert behind.metadata == {"steps": "9", "reachable_from": "4", "reachable_to": "9"}
    ahead = unreachable(9, 12, journal, "expected_steps")
    assert ahead.reason == "STEPS_MISMATCH" and "ahead" in str(ahead)
    assert unreachable(9, 2, None, "steps").metadata["reachable_from"] == "9"  # no journal: only the present
