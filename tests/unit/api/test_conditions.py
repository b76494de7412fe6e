"""Condition bookkeeping keeps lastTransitionTime unless the status flips."""

from arbiter.api.conditions import get_condition, set_condition


def test_new_condition_is_appended() -> None:
    result = set_condition(None, "Ready", "False", "Waiting", "not yet", "t1", 3)
    assert result == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Waiting",
            "message": "not yet",
            "lastTransitionTime": "t1",
            "observedGeneration": 3,
        }
    ]


def test_same_status_keeps_transition_time_but_updates_message() -> None:
    first = set_condition(None, "Ready", "False", "Waiting", "a", "t1")
    second = set_condition(first, "Ready", "False", "Waiting", "b", "t2")
    assert second[0]["lastTransitionTime"] == "t1"
    assert second[0]["message"] == "b"
    assert first[0]["message"] == "a", "the input list must not change"


def test_flip_sets_new_transition_time_and_keeps_others() -> None:
    conditions = set_condition(None, "Progressing", "True", "Go", "", "t0")
    conditions = set_condition(conditions, "Ready", "False", "Waiting", "", "t1")
    conditions = set_condition(conditions, "Ready", "True", "Ok", "", "t2")
    assert [c["type"] for c in conditions] == ["Progressing", "Ready"]
    ready = get_condition(conditions, "Ready")
    assert ready is not None and ready["lastTransitionTime"] == "t2" and ready["status"] == "True"
    assert get_condition(conditions, "Missing") is None
