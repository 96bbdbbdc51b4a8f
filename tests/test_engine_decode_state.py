"""FastDecoder's decode-state bookkeeping: recording tokens, finishing rows, compacting the batch."""

from __future__ import annotations

import torch

from pspo_eval.generation.engine import _DecodeState


def _state(rows=(2, 0, 1)):
    B = len(rows)
    cache = [(torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 1, 4, 2).clone(),) * 2]
    return _DecodeState(cache, torch.ones(B, 4, dtype=torch.bool), torch.tensor([5, 6, 7]), 3, list(rows), [True] * B)


def test_record_appends_to_the_rows_prompt_and_finishes_at_a_stop_id():
    state = _state()
    out, finish, stopped = [[] for _ in range(3)], ["length"] * 3, [None] * 3
    stop = torch.tensor([99])
    assert state.record(torch.tensor([10, 99, 12]), stop, out, finish, stopped) == 2
    # batch position j holds prompt rows[j]: prompt 2 got 10, prompt 0 stopped, prompt 1 got 12
    assert out == [[], [12], [10]]
    assert finish == ["stop", "length", "length"] and stopped == [99, None, None]
    # a finished row ignores whatever it produces next
    assert state.record(torch.tensor([13, 14, 99]), stop, out, finish, stopped) == 1
    assert out == [[], [12], [10, 13]] and finish == ["stop", "stop", "length"]


def test_compact_keeps_only_live_rows_cache_and_positions_aligned():
    state = _state()
    state.live = [True, False, True]
    token = state.compact(torch.tensor([10, 11, 12]))
    assert token.tolist() == [10, 12]
    assert state.rows == [2, 1] and state.live == [True, True]
    assert state.pos_next.tolist() == [5, 7]
    assert state.cache[0][0][:, 0, 0, 0].tolist() == [0.0, 2.0]  # the rows' own keys moved with them
    assert state.key_valid.shape == (2, 4)


