"""The decision rule: reject at or above the threshold, as references to two shared strings."""

import numpy as np

from mlops_common.decisions import decide


def test_reject_at_or_above_the_threshold_else_approve():
    assert decide(np.array([0.1, 0.5, 0.9], dtype=np.float32), 0.5).tolist() == ["approve", "reject", "reject"]


def test_every_row_refers_to_one_of_two_strings():
    # The inference log's publisher keeps a request's decisions until their message is sent: a string per row
    # would be one more object per prediction held in memory for that while.
    first = decide(np.array([0.1, 0.9]), 0.5).tolist()
    second = decide(np.array([0.2, 0.8], dtype=np.float32), 0.5).tolist()
    assert first[0] is second[0]
    assert first[1] is second[1]
