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




def test_ensure_column_widens_the_cache_by_a_chunk_up_to_the_limit():
    state = _state()
    state.col, state.limit = 4, 6  # the cache (4 wide) is full; at most 6 columns are ever needed
    state.ensure_column(chunk=8)
    assert state.key_valid.shape == (3, 6) and not state.key_valid[:, 4:].any()
    k = state.cache[0][0]
    assert k.shape == (3, 1, 6, 2) and k.is_contiguous()
    assert k[:, 0, :4, 0].tolist() == [[0.0] * 4, [1.0] * 4, [2.0] * 4] and not k[:, :, 4:].any()
    state.col = 5
    state.ensure_column(chunk=8)  # room already: nothing changes
    assert state.cache[0][0] is k


def test_merge_right_aligns_both_batches_and_drops_columns_no_row_uses():
    old = _state(rows=(0, 1))  # 2 rows, 4 columns, next column 3
    old.key_valid = torch.tensor([[False, True, True, False], [False, False, True, False]])
    old.pos_next = torch.tensor([5, 6])
    new = _DecodeState([(torch.full((1, 1, 3, 2), 9.0),) * 2], torch.tensor([[True, True, False]]),
                       torch.tensor([4]), 2, [7], [True])  # one row with 2 prompt columns used of 3
    old.merge(new, chunk=4, max_new_tokens=10)
    # old keeps columns 1 and 2 (column 0 is no row's; column 3 is past its next column), new uses its
    # first 2: both end at the common next column 2
    assert old.col == 2 and old.rows == [0, 1, 7] and old.live == [True, True, True]
    assert old.key_valid.tolist() == [[True, True, False, False, False, False],
                                      [False, True, False, False, False, False],
                                      [True, True, False, False, False, False]]
    assert old.pos_next.tolist() == [5, 6, 4] and old.limit == 2 + 10 - 1
    k = old.cache[0][0]
    assert k.shape == (3, 1, 6, 2) and k[:, 0, :2, 0].tolist() == [[0.0, 0.0], [1.0, 1.0], [9.0, 9.0]]


def test_compact_with_no_live_row_empties_the_batch():
    # Every row finished at once while prompts wait to refill it: the batch becomes empty, not an error.
    state = _state()
    state.live = [False, False, False]
    token = state.compact(torch.tensor([10, 11, 12]))
    assert token.tolist() == [] and state.rows == [] and state.cache[0][0].shape[0] == 0


def _reserved_state(rows=(2, 0, 1), width=4, reserve=7):
    """_state's cache as views of buffers `reserve` columns wide, the reserved columns holding junk."""
    B = len(rows)
    bufs = [torch.full((B, 1, reserve, 2), float("nan")) for _ in range(2)]  # keys, values
    for buf in bufs:
        buf[:, :, :width] = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1)
    k, v = (buf[:, :, :width] for buf in bufs)
    return _DecodeState([(k, v)], torch.ones(B, width, dtype=torch.bool), torch.tensor([5, 6, 7]), 3,
                        list(rows), [True] * B, limit=reserve, reserved=True), bufs[0]


def test_a_reserved_cache_grows_in_place_with_zeroed_columns():
    state, buf = _reserved_state()
    state.col = 4
    state.ensure_column(chunk=2)
    k = state.cache[0][0]
    assert k.shape == (3, 1, 6, 2) and k.data_ptr() == buf.data_ptr()  # no copy: the same buffer
    assert k[:, 0, :4, 0].tolist() == [[0.0] * 4, [1.0] * 4, [2.0] * 4] and not k[:, :, 4:].any()
    assert torch.isnan(buf[:, :, 6:]).all()  # columns past the view stay untouched
    state.col = 6
    state.ensure_column(chunk=2)  # only one reserved column is left: the limit caps the growth
    assert state.cache[0][0].shape == (3, 1, 7, 2) and state.key_valid.shape == (3, 7)


def test_compacting_a_reserved_cache_packs_the_live_rows_into_the_same_buffer():
    state, buf = _reserved_state()
    state.live = [False, True, True]
    token = state.compact(torch.tensor([10, 11, 12]))
    k = state.cache[0][0]
    assert token.tolist() == [11, 12] and state.rows == [0, 1]
    assert k.shape == (2, 1, 4, 2) and k.data_ptr() == buf.data_ptr()
    assert k[:, 0, 0, 0].tolist() == [1.0, 2.0] and state.cache[0][1][:, 0, 0, 0].tolist() == [1.0, 2.0]
    state.col = 4
    state.ensure_column(chunk=8)  # it can still grow in place to the limit
    assert state.cache[0][0].shape == (2, 1, 7, 2) and state.cache[0][0].data_ptr() == buf.data_ptr()


def test_merging_into_a_reserved_cache_reserves_the_new_limit():
    old, _ = _reserved_state(rows=(0, 1, 2))
    new = _DecodeState([(torch.full((1, 1, 3, 2), 9.0),) * 2], torch.tensor([[True, True, False]]),
                       torch.tensor([4]), 2, [7], [True])
    old.merge(new, chunk=2, max_new_tokens=10)
    k = old.cache[0][0]
    assert old.limit == 3 + 10 - 1 and k.shape == (4, 1, 5, 2)  # C = 3 used columns + a chunk of 2
    assert k.stride(1) == old.limit * 2  # a view of a buffer as wide as the new limit
    assert k[3, 0, :3, 0].tolist() == [0.0, 9.0, 9.0] and not k[:, :, 3:].any()
    old.col = 5
    old.ensure_column(chunk=2)
    assert old.cache[0][0].shape == (4, 1, 7, 2)
