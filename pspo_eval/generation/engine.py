"""A fast batched decode loop for Llama-family models (Llama, Qwen2, Qwen3, Mistral) on CPU or GPU.

Why our own loop: on CPUs, transformers' ``generate`` spends most of each step in Python overhead
(cache objects, mask construction, logits processors, output dataclasses), not in matrix products.
This loop runs the same weights with the same operations in the same dtypes, but:

- fused QKV and gate/up projections (one matrix product each instead of three / two);
- a KV cache written in place and grown 32 columns at a time, so a decode step attends over whole
  contiguous tensors (a bf16 matrix product on CPU copies a strided cache slice first: that copy was
  38% of a step); where the C attention kernel reads it (it takes any strides), the cache instead
  grows as a view inside buffers reserved up to the last column the batch can need, without a copy;
- finished rows are dropped from the batch once enough of them finish (the cache is compacted), and
  with ``max_batch`` the freed rows are refilled from the waiting prompts (continuous batching);
- the batch decodes in a few segments of similar prompt width, each over its own cache, so short
  prompts do not attend over the longest one's padding, and the prefix all prompts share (system
  prompt, chat header) is kept once and read once per step for all rows, so a step reads fewer
  cache columns (see ``_segments``, ``_decode_attention``);
- on CPU a decode step's attention, its greedy choice and (bf16) the rotary embedding run in small
  C kernels (:mod:`pspo_eval.generation.native`, built on first use where a C compiler exists):
  each row's cache is read once for all the query heads sharing a KV head, masked columns and
  finished rows are skipped, scores and softmax stay in float32 (in bf16 attention went from 29 to
  16 ms of a 64-row step; in fp32 it is level with the torch form and gives the same tokens); the
  argmax reads the transposed logits at memory speed (14.5 -> 0.9 ms of a 128-row step); the
  rotary kernel gives torch's bits in torch's layout (0.20 -> 0.08 ms a layer); each residual add
  and the RMS norm after it are one pass of a kernel that sums in torch's order, so the same bits
  (checked against the torch form at first use; 190 -> 55 µs at 256 rows);
- only the last position's logits are computed during prefill, and prompts are prefilled in
  groups of similar length (sorted), so short prompts do not pay for the longest one's padding;
- on CPU every projection is computed as ``W @ xᵀ`` rather than ``x @ Wᵀ``: at decode shapes
  (a few dozen rows against a wide weight) oneDNN/MKL run that form up to twice as fast, and the
  activations then simply stay in that transposed memory layout from layer to layer;
- sampling draws one uniform number per row from that row's own RNG (seeded per sample), so a
  sample does not depend on which other prompts share its batch or on their order.

Greedy outputs match ``model.generate`` on the same batch (tested in fp32; in bf16 they agree
except where two logits tie within bf16 rounding). Architectures not listed in ``SUPPORTED`` use
plain ``generate`` (see :mod:`pspo_eval.generation.hf`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pspo_eval.generation import native

SUPPORTED = {"llama", "qwen2", "qwen3", "mistral"}


@dataclass
class Completion:
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop token was produced; it is not included) or "length"
    stop_token: int | None = None  # which stop id ended it (finish "stop"); a trainer appends it to train on it


@dataclass
class _Layer:
    in_norm: torch.Tensor
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    wo: torch.Tensor
    post_norm: torch.Tensor
    w_gate_up: torch.Tensor
    w_down: torch.Tensor


@dataclass
class _DecodeState:
    """The batch being decoded: its cache, which key columns are valid, and each row's next position.

    ``rows[j]`` is the prompt index at batch position ``j``; ``live[j]`` turns False when that row
    stops (it stays in the batch, ignored, until :meth:`compact` drops it); ``col`` is the cache
    column the next token is written to.
    """

    cache: list[tuple[torch.Tensor, torch.Tensor]]
    key_valid: torch.Tensor  # [B, S] bool
    pos_next: torch.Tensor  # [B] position id of the next token
    col: int
    rows: list[int]
    live: list[bool]
    limit: int = 0  # the most cache columns this batch can need; the cache never grows past it
    # The cache tensors are views of buffers ``limit`` columns wide (see ensure_column), or whole tensors.
    reserved: bool = False

    def ensure_column(self, chunk: int) -> None:
        """Make room for a write at column ``col``: widen the cache by ``chunk`` columns (up to ``limit``).

        The cache is kept exactly as wide as it is used (plus at most ``chunk - 1`` masked columns), so
        a decode step attends over whole contiguous tensors: a bf16 matrix product on CPU copies any
        operand whose batch stride is not its packed size, and slicing a full-length cache to the
        used columns cost ~38% of a decode step (profiled; see the module docstring).

        A ``reserved`` cache (the C attention kernel reads any batch and head strides) instead grows
        its views into the columns already reserved in their buffers, zeroing them: no copy. Copying
        the whole cache at every widening cost 1.2-1.5 s of a 256-prompt bf16 run's ~20 s of steps
        (9 widenings, measured).
        """
        width = self.key_valid.shape[1]
        if self.col < width:
            return
        extra = max(1, min(chunk, self.limit - width))
        grow = _grown if self.reserved else _widen
        self.cache = [(grow(k, extra), grow(v, extra)) for k, v in self.cache]
        self.key_valid = torch.cat([self.key_valid, self.key_valid.new_zeros(self.key_valid.shape[0], extra)], 1)

    def record(self, token: torch.Tensor, stop: torch.Tensor, out, finish, stopped_by, budget: int | None = None) -> int:
        """Append each live row's new token to its output (or finish it at a stop id); rows still live.

        A row whose output reaches ``budget`` tokens finishes too (its finish reason stays "length").
        """
        tok_list = token.tolist()
        stop_list = torch.isin(token, stop).tolist()
        live = self.live
        for j, r in enumerate(self.rows):
            if not live[j]:
                continue
            if stop_list[j]:
                finish[r] = "stop"
                stopped_by[r] = tok_list[j]
                live[j] = False
            else:
                out[r].append(tok_list[j])
                if budget is not None and len(out[r]) >= budget:
                    live[j] = False
        return sum(live)

    def compact(self, token: torch.Tensor) -> torch.Tensor:
        """Drop the finished rows from the batch (cache included); returns the live rows' tokens."""
        keep_idx = [j for j, alive in enumerate(self.live) if alive]
        keep = torch.tensor(keep_idx, dtype=torch.long, device=token.device)  # long even when empty
        if self.reserved:
            # Back into the first rows of the same buffers: fresh ones would be touched page by page
            # again (a new full-width copy made compaction 0.09 -> 0.7 s of a 256-prompt run).
            def packed(x: torch.Tensor) -> torch.Tensor:
                return _buffer(x)[: len(keep_idx), :, : x.shape[2]].copy_(x.index_select(0, keep))

            self.cache = [(packed(k), packed(v)) for k, v in self.cache]
        else:
            self.cache = [(k.index_select(0, keep), v.index_select(0, keep)) for k, v in self.cache]
        self.key_valid = self.key_valid.index_select(0, keep)
        self.pos_next = self.pos_next.index_select(0, keep)
        self.rows = [self.rows[j] for j in keep_idx]
        self.live = [True] * len(self.rows)
        return token.index_select(0, keep)

    def used_columns(self) -> torch.Tensor:
        """Indices of the written cache columns some row still attends to."""
        return self.key_valid[:, : self.col].any(0).nonzero().flatten()

    def merge(self, new: _DecodeState, chunk: int, max_new_tokens: int) -> None:
        """Append a freshly prefilled batch's rows to this (compacted) one: continuous refill.

        A key's column is only a slot (its position is already rotated into it), so the rows of both
        batches are right-aligned on a common next column: this batch keeps only the columns some
        row still attends to, the new rows' prompts end where those end, and both decode on from
        there. Costs one copy of the cache, as a compaction does.
        """
        used = self.used_columns()
        c_old, c_new = len(used), new.col
        C = max(c_old, c_new)
        self.limit = C + max_new_tokens - 1
        width = min(self.limit, C + chunk)
        B_old = len(self.rows)

        def joined(old: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
            out = _cache_tensor(old, B_old + fresh.shape[0], width, self.limit if self.reserved else width)
            out[:B_old, :, C - c_old : C] = old.index_select(2, used)
            out[B_old:, :, C - c_new : C] = fresh[:, :, :c_new]
            return out

        self.cache = [(joined(k, nk), joined(v, nv)) for (k, v), (nk, nv) in zip(self.cache, new.cache)]
        valid = self.key_valid.new_zeros(B_old + len(new.rows), width)
        valid[:B_old, C - c_old : C] = self.key_valid.index_select(1, used)
        valid[B_old:, C - c_new : C] = new.key_valid[:, :c_new]
        self.key_valid = valid
        self.pos_next = torch.cat([self.pos_next, new.pos_next])
        self.col = C
        self.rows = self.rows + new.rows
        self.live = self.live + new.live


@dataclass
class _Prefill:
    """A prefill pass attends over ``cache`` (per layer) up to its new keys, written at ``start``."""

    cache: list[tuple[torch.Tensor, torch.Tensor]]  # per layer ([B, KV, S, D], [B, KV, S, D])
    start: int  # cache column of the pass's first token
    mask: torch.Tensor  # [B, 1, T, start+T] bool, True = attend


@dataclass
class _Decode:
    """A decode step attends, per segment of the batch, over that segment's cache and the shared prefix."""

    segments: list[_DecodeState]  # the batch's rows, segment by segment
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None  # per layer [1, KV, P, D], or None
    live: list[torch.Tensor | None]  # per segment: which rows are still live ([B] bool), None if all are


def _cache_tensor(like: torch.Tensor, B: int, width: int, reserve: int) -> torch.Tensor:
    """A zero cache tensor [B, KV, width, D] shaped and typed as ``like``; with ``reserve`` > width, a
    view of a buffer ``reserve`` columns wide whose further columns are left for :func:`_grown`."""
    KV, D = like.shape[1], like.shape[3]
    if reserve <= width:
        return like.new_zeros(B, KV, width, D)
    out = like.new_empty(B, KV, reserve, D)[:, :, :width]
    return out.zero_()


def _buffer(x: torch.Tensor) -> torch.Tensor:
    """The whole buffer [B, KV, reserve, D] a reserved cache view ``x`` lies in (see _cache_tensor)."""
    reserve = x.stride(1) // x.stride(2)
    return x.as_strided((x.shape[0], x.shape[1], reserve, x.shape[3]), x.stride())


def _grown(x: torch.Tensor, extra: int) -> torch.Tensor:
    """A reserved cache view ``x`` ([B, KV, S, D]) grown by ``extra`` zeroed columns in place."""
    S = x.shape[2]
    y = _buffer(x)[:, :, : S + extra]
    y[:, :, S:].zero_()
    return y


def _widen(x: torch.Tensor, extra: int) -> torch.Tensor:
    """``x`` ([B, KV, S, D]) with ``extra`` zero columns appended along S (a new contiguous tensor)."""
    return torch.cat([x, x.new_zeros(x.shape[0], x.shape[1], extra, x.shape[3])], 2)


def supports(model) -> bool:
    """Whether :class:`FastDecoder` can run this model (architecture and options it implements)."""
    cfg = model.config
    if getattr(cfg, "model_type", None) not in SUPPORTED:
        return False
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return False
    if getattr(cfg, "use_sliding_window", False) or (
        cfg.model_type == "mistral" and getattr(cfg, "sliding_window", None)
    ):
        return False
    if getattr(cfg, "mlp_bias", False):
        return False
    return True


class FastDecoder:
    """Batched decoding over a Hugging Face causal LM's weights (see module docstring).

    ``model`` is a transformers model, or a :class:`pspo_eval.generation.light.LightModel` (the same
    checkpoint's weights and config loaded without transformers' model classes).
    """

    def __init__(self, model, *, compact_below: float = 0.75, share_prefix: bool = True, prefill_tokens: int | None = None,
                 cache_chunk: int = 32, segment_cost: int = 2048, max_segments: int = 4,
                 matmul_dtype: torch.dtype | None = None, native: bool = True):
        if not supports(model):
            raise ValueError(f"FastDecoder does not support model_type={model.config.model_type!r}")
        self.model = model
        cfg = model.config
        self.cfg = cfg
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.compact_below = compact_below
        self.share_prefix = share_prefix
        # Padded tokens per prefill group (None: 4 KiB of activations per hidden unit, 1024 tokens in
        # float32, 2048 in bf16). Smaller groups keep a layer's activations in cache, larger ones
        # make longer matrix products. Measured on 2-core CPUs: 64 GSM8K prompts in fp32 prefill in
        # ~11 s with 1024 against ~15 s with 4096 (EPYC); 256 prompts, 1024 against 2048 tokens:
        # fp32 17.6-18.5 against 18.9 s, bf16 5.4-5.9 against 4.2-4.8 s (Xeon, AMX).
        self.prefill_tokens = prefill_tokens
        # Cache columns added at a time (see _DecodeState.ensure_column): a decode step attends over
        # at most this many masked columns more than it needs.
        self.cache_chunk = cache_chunk
        # Rows decode in segments of similar prompt width, each over its own cache (see _segments):
        # a segment's extra kernel calls count as this many padded row-columns; refills add
        # segments, merged back down to max_segments (see _fold).
        self.segment_cost = segment_cost
        self.max_segments = max_segments
        # For use under torch.autocast(dtype=matmul_dtype) with weights in another dtype (a bf16
        # rollout of an fp32 policy): the fused weights and the KV cache are kept in matmul_dtype,
        # cast once per refresh, instead of autocast casting every weight and the whole cache at
        # every product of every step. The same values as autocast's own casts (both round to
        # nearest), so the same tokens.
        self.matmul_dtype = matmul_dtype
        self.transposed_rows = 256  # up to this many rows, projections run as W @ xᵀ on CPU
        # Decode steps attend and choose greedy tokens through the C kernels (generation.native)
        # where they build here; False (or PSPO_EVAL_NATIVE=0) keeps the torch forms.
        self.native = native
        self._norm_checked: dict[tuple[torch.dtype, int], bool] = {}  # see _fused_norm_ok
        self._light = isinstance(getattr(model, "weights", None), dict)  # a generation.light.LightModel
        self.rotary = model.rotary if self._light else model.model.rotary_emb
        self.refresh()

    def _lin(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """``F.linear(x, w, b)``; on CPU computed as ``(w @ xᵀ)ᵀ`` (see the module docstring)."""
        K = x.shape[-1]
        if self.device.type != "cpu" or x.numel() > self.transposed_rows * K:
            return F.linear(x, w, b)
        y = torch.mm(w, x.reshape(-1, K).t()).t().reshape(*x.shape[:-1], w.shape[0])
        return y if b is None else y + b

    # -- weights -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """(Re)build the fused weights from the model's current parameters (call after an update)."""
        model = self.model
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        self.cache_dtype = self.matmul_dtype or self.dtype
        if self._light:
            self._refresh_from_weights(model.weights)
        else:
            self._refresh_from_model(model)
        if self.cache_dtype != self.dtype:
            with torch.no_grad():
                self.lm_head = self.lm_head.to(self.cache_dtype)
                for layer in self.layers:
                    for name in ("wqkv", "wo", "w_gate_up", "w_down"):
                        setattr(layer, name, getattr(layer, name).to(self.cache_dtype))

    def _refresh_from_model(self, model) -> None:
        """The fused weights from a transformers model's modules."""
        with torch.no_grad():
            self.embed = model.model.embed_tokens.weight
            self.final_norm = model.model.norm.weight
            self.lm_head = model.lm_head.weight
            self.layers: list[_Layer] = []
            for block in model.model.layers:
                att, mlp = block.self_attn, block.mlp
                wqkv = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight], 0).contiguous()
                bqkv = None
                if att.q_proj.bias is not None:
                    bqkv = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias], 0).contiguous()
                self.layers.append(
                    _Layer(
                        in_norm=block.input_layernorm.weight,
                        wqkv=wqkv,
                        bqkv=bqkv,
                        q_norm=att.q_norm.weight if hasattr(att, "q_norm") else None,  # Qwen3
                        k_norm=att.k_norm.weight if hasattr(att, "k_norm") else None,
                        wo=att.o_proj.weight,
                        post_norm=block.post_attention_layernorm.weight,
                        w_gate_up=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], 0).contiguous(),
                        w_down=mlp.down_proj.weight,
                    )
                )
        self.o_bias = [b.self_attn.o_proj.bias for b in model.model.layers]

    def _refresh_from_weights(self, w: dict[str, torch.Tensor]) -> None:
        """The same fused weights from a flat name → tensor mapping (transformers' parameter names)."""
        self.embed = w["model.embed_tokens.weight"]
        self.final_norm = w["model.norm.weight"]
        self.lm_head = w["lm_head.weight"]
        self.layers = []
        self.o_bias = []
        for i in range(self.cfg.num_hidden_layers):
            pre = f"model.layers.{i}."
            att = pre + "self_attn."
            bias = [b for b in (w.get(att + f"{n}_proj.bias") for n in "qkv") if b is not None]
            self.layers.append(
                _Layer(
                    in_norm=w[pre + "input_layernorm.weight"],
                    wqkv=torch.cat([w[att + f"{n}_proj.weight"] for n in "qkv"], 0).contiguous(),
                    bqkv=torch.cat(bias, 0).contiguous() if len(bias) == 3 else None,
                    q_norm=w.get(att + "q_norm.weight"),
                    k_norm=w.get(att + "k_norm.weight"),
                    wo=w[att + "o_proj.weight"],
                    post_norm=w[pre + "post_attention_layernorm.weight"],
                    w_gate_up=torch.cat([w[pre + "mlp.gate_proj.weight"], w[pre + "mlp.up_proj.weight"]], 0).contiguous(),
                    w_down=w[pre + "mlp.down_proj.weight"],
                )
            )
            self.o_bias.append(w.get(att + "o_proj.bias"))

    # -- the transformer ---------------------------------------------------------------------------
    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # As transformers' RMSNorm: normalise in fp32, cast back, then scale.
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * xf.to(dtype)

    def _add_rms(self, x: torch.Tensor, y: torch.Tensor | None, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + y, its RMS norm) (``y`` None: (x, its norm)); may update ``x`` in place.

        On CPU in one pass of the C kernel (:func:`pspo_eval.generation.native.add_rms`), whose bits
        are those of :meth:`_rms` after torch's add: checked here once per dtype and width against this
        torch form, and not used where they differ (another build of torch may sum in another order).
        Ten torch calls per norm took ~190 µs at 256 rows of 576, the kernel ~55 µs (bf16, measured).
        """
        if self.native and x.device.type == "cpu" and self._fused_norm_ok(x.dtype, x.shape[-1], weight):
            out = native.add_rms(x, y, weight, self.eps)
            if out is not None:
                return out
        x = x if y is None else x + y
        return x, self._rms(x, weight)

    def _fused_norm_ok(self, dtype: torch.dtype, N: int, weight: torch.Tensor) -> bool:
        key = (dtype, N)
        ok = self._norm_checked.get(key)
        if ok is None:
            gen = torch.Generator().manual_seed(0)
            x = (torch.randn(67, 1, N, generator=gen) * torch.rand(67, 1, 1, generator=gen) * 4).to(dtype)
            y = torch.randn(N, 67, generator=gen).to(dtype).t().reshape(67, 1, N)  # as _lin leaves it
            w = weight.detach().to(dtype)
            ref_x = x + y
            out = native.add_rms(x.clone(), y, w, self.eps)
            bare = native.add_rms(x.clone(), None, w, self.eps)
            ok = (out is not None and bare is not None and torch.equal(out[0], ref_x)
                  and torch.equal(out[1], self._rms(ref_x, w)) and torch.equal(bare[1], self._rms(x, w)))
            self._norm_checked[key] = ok
        return ok

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x·cos + rotate_half(x)·sin, without materialising rotate_half: the same products and sums
        # (a + (-b)·s is exactly a - b·s in IEEE arithmetic), in four passes instead of six.
        half = x.shape[-1] // 2
        out = x * cos
        out[..., :half] -= x[..., half:] * sin[..., :half]
        out[..., half:] += x[..., :half] * sin[..., half:]
        return out

    def _rope_heads(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """The rotary embedding of qkv's query and key heads by the C kernel: (q, k), or None."""
        return native.rope(qkv, cos, sin, self.n_heads, self.n_kv, self.head_dim)

    def _forward(
        self,
        ids: torch.Tensor,  # [B, T]
        positions: torch.Tensor,  # [B, T]
        ctx: _Prefill | _Decode,  # what the queries attend over (see _attend)
    ) -> torch.Tensor:
        B, T = ids.shape
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        x = F.embedding(ids, self.embed)
        cos3, sin3 = self.rotary(x, positions)
        cos, sin = cos3.unsqueeze(1), sin3.unsqueeze(1)
        # bf16 on CPU: the rotary embedding in one C call per layer, the same bits (generation.native)
        native_rope = self.native and x.dtype == torch.bfloat16 and x.device.type == "cpu"
        x, h = self._add_rms(x, None, self.layers[0].in_norm)
        for i, layer in enumerate(self.layers):
            qkv = self._lin(h, layer.wqkv, layer.bqkv)
            qk = self._rope_heads(qkv, cos3, sin3) if native_rope and layer.q_norm is None else None
            q, k, v = qkv.split([H * D, KV * D, KV * D], dim=-1)
            if qk is not None:
                q, k = qk
            else:
                q = q.view(B, T, H, D)
                k = k.view(B, T, KV, D)
                if layer.q_norm is not None and layer.k_norm is not None:
                    q = self._rms(q, layer.q_norm)
                    k = self._rms(k, layer.k_norm)
                q = self._rope(q.transpose(1, 2), cos, sin)
                k = self._rope(k.transpose(1, 2), cos, sin)
            v = v.view(B, T, KV, D).transpose(1, 2)
            att = self._attend(i, q, k, v, ctx)
            att = att.transpose(1, 2).reshape(B, T, H * D)
            x, h = self._add_rms(x, self._lin(att, layer.wo, self.o_bias[i]), layer.post_norm)
            gate, up = self._lin(h, layer.w_gate_up).chunk(2, dim=-1)
            down = self._lin(F.silu(gate) * up, layer.w_down)
            if i + 1 < len(self.layers):  # this residual add with the next layer's input norm
                x, h = self._add_rms(x, down, self.layers[i + 1].in_norm)
            else:
                x = x + down
        return x

    def _attend(self, i: int, q, k, v, ctx: _Prefill | _Decode) -> torch.Tensor:
        """Write layer ``i``'s new keys and values into the cache, then attend over it.

        Prefill uses the fused ``scaled_dot_product_attention``; a decode step (one query per row)
        runs :meth:`_decode_attention` once per segment of the batch: with the fused kernel a bf16
        decode step took 3.5× the CPU time (measured: 32 GSM8K prompts' cache, 1 thread, interleaved
        A/B in one process).
        """
        if isinstance(ctx, _Prefill):
            ck, cv = ctx.cache[i]
            end = ctx.start + q.shape[2]
            ck[:, :, ctx.start : end] = k
            cv[:, :, ctx.start : end] = v
            return F.scaled_dot_product_attention(
                q, ck[:, :, :end], cv[:, :, :end], attn_mask=ctx.mask, enable_gqa=self.n_kv != self.n_heads
            )
        prefix = ctx.prefix[i] if ctx.prefix else None
        outs, a = [], 0
        for seg, live in zip(ctx.segments, ctx.live):
            b = a + len(seg.rows)
            ck, cv = seg.cache[i]
            # The whole (contiguous) cache: columns past ``col`` are masked (see ensure_column).
            new = (k[a:b, :, 0], v[a:b, :, 0], seg.col)
            outs.append(self._decode_attention(q[a:b], ck, cv, seg.key_valid, prefix, live, new))
            a = b
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _decode_attention(self, q, k, v, valid, prefix=None, live=None, new=None):
        """One query per row: grouped-query attention, by the C kernel where it runs (see
        :mod:`pspo_eval.generation.native`), else as small batched matrix products.

        PyTorch's fused CPU attention kernel costs milliseconds per call for a single query; the torch
        form here does the same arithmetic (scores in fp32 softmax, as transformers' eager path) without
        expanding the KV heads. ``valid`` ([B, S]) masks the rows' own columns; rows False in ``live``
        ([B] bool) may be skipped (the kernel gives them zeros). ``new`` (key, value [B, KV, D], column):
        the step's own key and value, written into the cache at that column first (by the kernel
        itself where it runs: two strided torch copies fewer per layer and segment). With ``prefix``
        (the keys and values every row shares, [1, KV, P, D] each) the rows attend over
        [prefix | own columns] under one softmax, the prefix read once for the whole batch as one
        matrix product per KV head instead of once per row.
        """
        if self.native:
            out = native.decode_attention(q, k, v, valid, prefix, live=live, new=new)
            if out is not None:
                return out
        if new is not None:
            k[:, :, new[2]] = new[0]
            v[:, :, new[2]] = new[1]
        B, H, _, D = q.shape
        KV = k.shape[1]
        G = H // KV
        scale = D**-0.5
        qg = q.reshape(B, KV, G, D)
        if k.dtype != torch.float32 and k.device.type == "cpu":
            # bf16 on CPU: K @ qᵀ (one tall product per row and head) reads the cache at memory speed,
            # 0.32 against 0.53 ms per layer for q @ Kᵀ (64 rows × 256 columns, caches in DRAM,
            # measured); in fp32 q @ Kᵀ is the faster form (1.04 against 1.27 ms).
            scores = torch.matmul(k, qg.transpose(-1, -2)).transpose(-1, -2) * scale  # [B, KV, G, S]
        else:
            scores = torch.matmul(qg, k.transpose(-1, -2)) * scale  # [B, KV, G, S]
        scores = scores.masked_fill(~valid.view(B, 1, 1, -1), float("-inf"))
        if prefix is None:
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
            return torch.matmul(probs, v).reshape(B, H, 1, D)
        pk, pv = prefix
        P = pk.shape[2]
        q_heads = qg.transpose(0, 1).reshape(KV, B * G, D)  # every row's queries of one KV head
        shared = (torch.matmul(q_heads, pk[0].transpose(-1, -2)) * scale).view(KV, B, G, P).transpose(0, 1)
        probs = torch.softmax(torch.cat([shared, scores], -1), dim=-1, dtype=torch.float32).to(v.dtype)
        out = torch.matmul(probs[..., P:], v)
        p_heads = probs[..., :P].transpose(0, 1).reshape(KV, B * G, P)
        return (out + torch.matmul(p_heads, pv[0]).view(KV, B, G, D).transpose(0, 1)).reshape(B, H, 1, D)

    def _logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """[B, V] next-token scores in the model's dtype (on CPU a transposed view, see :meth:`_lin`)."""
        return self._lin(self._rms(hidden_last, self.final_norm), self.lm_head)

    # -- decoding ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        stop_ids: Sequence[int],
        temperature: float = 0.0,
        top_p: float = 1.0,
        seeds: Sequence[int] | None = None,
        max_batch: int | None = None,
    ) -> list[Completion]:
        """Decode tokenized prompts; rows finish at a stop id or after max_new_tokens.

        With ``max_batch`` below the number of prompts, at most that many rows decode at once and
        finished rows are replaced by waiting prompts as the batch shrinks (continuous refill), so
        the batch stays full instead of draining to its longest row before the next one starts.
        """
        B = len(prompts)
        if B == 0:
            return []
        if max_new_tokens <= 0:
            return [Completion([], "length") for _ in prompts]
        if min(len(p) for p in prompts) == 0:
            raise ValueError("empty prompt")
        # Batch positions hold the prompts sorted by length (shortest first); `rows` maps a batch
        # position back to its prompt, so outputs and per-sample RNGs follow the prompt, not the slot.
        order = sorted(range(B), key=lambda r: (len(prompts[r]), r))
        width = B if not max_batch or max_batch >= B else max(1, max_batch)
        waiting = order[width:]
        rngs = [random.Random(s) for s in seeds] if (temperature > 0 and seeds is not None) else None
        if temperature > 0 and rngs is None:
            rngs = [random.Random(r) for r in range(B)]
        stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=self.device)
        out: list[list[int]] = [[] for _ in range(B)]
        finish = ["length"] * B
        stopped_by: list[int | None] = [None] * B
        # The prefix every prompt of the call shares (system prompt, chat-template header): computed
        # once, kept once, and attended to by every row of every segment (see _decode_attention).
        L = min(shared_prefix_length(prompts), min(len(p) for p in prompts) - 1) if (B > 1 and self.share_prefix) else 0
        prefix = self._prefix_cache(prompts[0][:L]) if L > 0 else None

        def start(rows: list[int]) -> list[tuple[_DecodeState, torch.Tensor]]:
            """Prefill these prompts (sorted by length) as segments of similar width; choose first tokens."""
            fresh = []
            # Segments are measured on CPUs only; on a GPU a step is bound by kernel launches, which
            # each segment adds, so there the rows stay one segment.
            cost = self.segment_cost if self.device.type == "cpu" else math.inf
            for a, b in _segments([len(prompts[r]) - L for r in rows], cost):
                state, logits = self._prefill([prompts[r] for r in rows[a:b]], max_new_tokens, L, prefix)
                state.rows = list(rows[a:b])
                token = self._choose(logits, temperature, top_p, [rngs[r] for r in state.rows] if rngs else None)
                state.record(token, stop, out, finish, stopped_by, max_new_tokens)
                fresh.append((state, token))
            return fresh

        batch = start(order[:width])  # the segments decoding, each with its rows' latest tokens
        while True:
            n_live = sum(sum(seg.live) for seg, _ in batch)
            if n_live == 0 and not waiting:
                break
            if waiting and n_live <= self.compact_below * sum(len(seg.rows) for seg, _ in batch):
                # Refill: all segments drop their finished rows, the waiting prompts take their place.
                fresh, waiting = waiting[: width - n_live], waiting[width - n_live :]
                batch = self._fold(_compacted(batch, None) + start(fresh), max_new_tokens)
                continue  # the new rows' first tokens may have finished them: check again
            if not waiting:
                batch = _compacted(batch, self.compact_below)  # draining: segment by segment
            segments = [seg for seg, _ in batch]
            logits = self._decode_step(segments, prefix, torch.cat([t for _, t in batch]))
            rows = [r for seg in segments for r in seg.rows]
            token = self._choose(logits, temperature, top_p, [rngs[r] for r in rows] if rngs else None)
            batch = list(zip(segments, token.split([len(seg.rows) for seg in segments])))
            for seg, t in batch:
                seg.record(t, stop, out, finish, stopped_by, max_new_tokens)
        return [Completion(out[r], finish[r], stopped_by[r]) for r in range(B)]

    def _fold(self, batch: list[tuple[_DecodeState, torch.Tensor]], max_new_tokens: int) -> list[tuple[_DecodeState, torch.Tensor]]:
        """Merge segments until at most ``max_segments`` remain, each time the pair that wastes the
        fewest padded cache columns when right-aligned together (each segment costs a few kernel
        calls per layer and step)."""
        while len(batch) > self.max_segments:
            used = [len(seg.used_columns()) for seg, _ in batch]
            rows = [len(seg.rows) for seg, _ in batch]
            pairs = [(i, j) for i in range(len(batch)) for j in range(i + 1, len(batch))]
            i, j = min(pairs, key=lambda ij: _merge_waste(rows[ij[0]], used[ij[0]], rows[ij[1]], used[ij[1]]))
            (a, ta), (b, tb) = batch[i], batch[j]
            a.merge(b, self.cache_chunk, max_new_tokens)
            batch = [x for n, x in enumerate(batch) if n not in (i, j)] + [(a, torch.cat([ta, tb]))]
        return batch

    def _decode_step(self, segments: list[_DecodeState], prefix, token: torch.Tensor) -> torch.Tensor:
        """One new token per row of every segment: write it at each segment's next cache column,
        return the next logits (rows in segment order)."""
        for seg in segments:
            seg.ensure_column(self.cache_chunk)
            seg.key_valid[:, seg.col] = True
        positions = torch.cat([seg.pos_next for seg in segments])
        live = [None if all(seg.live) else torch.tensor(seg.live) for seg in segments]
        hidden = self._forward(token[:, None], positions[:, None], _Decode(segments, prefix, live))
        for seg in segments:
            seg.pos_next += 1
            seg.col += 1
        return self._logits(hidden[:, -1])

    def _prefill(self, prompts: list[Sequence[int]], max_new_tokens: int, L: int = 0,
                 prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> tuple[_DecodeState, torch.Tensor]:
        """Run the (length-sorted) prompts through the model into a fresh cache: (state, first logits).

        ``prefix`` holds the keys and values of the first ``L`` tokens, which every prompt shares
        (:meth:`_prefix_cache`). During prefill each row's cache is laid out as [prefix | left
        padding | rest of the prompt]; the returned state keeps only [left padding | rest of the
        prompt | generated] per row: decode steps attend to the one shared copy of the prefix.
        """
        B, dev = len(prompts), self.device
        lengths = [len(p) for p in prompts]
        Ts = max(lengths) - L  # width of the per-row part of the prompt
        T = L + Ts
        # Decode writes columns T .. T + max_new_tokens - 2; the cache grows to them chunk by chunk.
        limit = T + max_new_tokens - 1
        S = min(limit, T + self.cache_chunk)
        cache = self._new_cache(B, S)
        for (ck, cv), (pk, pv) in zip(cache, prefix or []):
            ck[:, :, :L] = pk
            cv[:, :, :L] = pv
        pad = torch.tensor([Ts - (n - L) for n in lengths], device=dev)
        ids = torch.zeros(B, Ts, dtype=torch.long, device=dev)
        for r, p in enumerate(prompts):
            ids[r, Ts - (len(p) - L) :] = torch.tensor(list(p[L:]), dtype=torch.long)
        qcol = torch.arange(Ts, device=dev)  # query index within the per-row part
        positions = (L + qcol[None, :] - pad[:, None]).clamp(min=0)
        cols = torch.arange(T, device=dev)
        key_ok = (cols[None, :] < L) | (cols[None, :] >= L + pad[:, None])  # [B, T]
        causal = cols[None, :] <= (L + qcol)[:, None]  # [Ts (query), T (key)]
        # Padding queries also see themselves, so no row of the softmax is empty (no NaN).
        mask = (causal[None] & key_ok[:, None, :]) | (cols[None, :] == (L + qcol)[:, None])[None]
        mask = mask[:, None]
        last = []
        budget = self.prefill_tokens or 4096 // self.cache_dtype.itemsize
        for a, b in _prefill_groups([n - L for n in lengths], budget):
            w = lengths[b - 1] - L  # the group's widest per-row part; columns before it are padding
            ctx = _Prefill([(k[a:b], v[a:b]) for k, v in cache], L + Ts - w, mask[a:b, :, Ts - w :])
            hidden = self._forward(ids[a:b, Ts - w :], positions[a:b, Ts - w :], ctx)
            last.append(hidden[:, -1])
        key_valid = torch.zeros(B, S, dtype=torch.bool, device=dev)
        key_valid[:, :T] = key_ok
        reserved = self._reserve_cache() and limit > S
        if L > 0 or reserved:  # the rows' own columns, as whole tensors or in buffers `limit - L` wide
            def own(x: torch.Tensor) -> torch.Tensor:
                reserve = limit - L if reserved else S - L
                return x.new_empty(B, x.shape[1], reserve, x.shape[3])[:, :, : S - L].copy_(x[:, :, L:])

            cache = [(own(k), own(v)) for k, v in cache]
            key_valid = key_valid[:, L:].contiguous()
        state = _DecodeState(cache, key_valid, torch.tensor(lengths, device=dev), T - L, list(range(B)), [True] * B,
                             limit - L, reserved)
        return state, self._logits(torch.cat(last))

    def _reserve_cache(self) -> bool:
        """Whether decode caches grow in place inside reserved buffers (see _DecodeState.ensure_column):
        where the C attention kernel reads them, since it takes any batch and head strides (the torch
        form's matrix products would copy a strided view at every step)."""
        return self.native and self.device.type == "cpu" and native.attends(self.cache_dtype)

    def _new_cache(self, B: int, S: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        shape = (B, self.n_kv, S, self.head_dim)
        return [
            (torch.zeros(shape, dtype=self.cache_dtype, device=self.device),
             torch.zeros(shape, dtype=self.cache_dtype, device=self.device))
            for _ in self.layers
        ]

    def _prefix_cache(self, prefix_ids: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The shared prefix's keys and values per layer ([1, KV, L, D] each), computed once (batch 1)."""
        L, dev = len(prefix_ids), self.device
        prefix = torch.tensor([list(prefix_ids)], dtype=torch.long, device=dev)
        cache = self._new_cache(1, L)
        causal = torch.ones(L, L, dtype=torch.bool, device=dev).tril()[None, None]
        self._forward(prefix, torch.arange(L, device=dev)[None], _Prefill(cache, 0, causal))
        return cache

    def _choose(
        self, logits: torch.Tensor, temperature: float, top_p: float, rngs: list[random.Random | None] | None
    ) -> torch.Tensor:
        if temperature <= 0 or rngs is None:
            if self.native and logits.t().is_contiguous():
                # The [V, B] product as it lies in memory, scanned by the C kernel: 1.1 against 14.5 ms
                # for torch.max below (bf16, 128 rows, measured); the same first index of the maximum.
                token = native.argmax_columns(logits.t())
                if token is not None:
                    return token
            if logits.stride(-1) != 1 and logits.dtype != torch.float32:
                # bf16: max over the vocabulary of the [V, B] product as it lies in memory, 7 ms against
                # 16 ms for an fp32 copy in rows and argmax (64 rows, measured; in fp32 the copy and
                # argmax are faster, 11 against 15 ms). The same first index of the maximum as argmax,
                # and the fp32 conversion is exact, so the same tokens.
                return torch.max(logits.t(), 0).indices
            return logits.contiguous().argmax(-1)
        # contiguous fp32 rows: top-k along a strided (transposed) row is several times slower
        return sample_top_p(logits.float().contiguous(), temperature, top_p, [r.random() if r else 0.5 for r in rngs])


def _compacted(batch: list[tuple[_DecodeState, torch.Tensor]], below: float | None) -> list[tuple[_DecodeState, torch.Tensor]]:
    """The batch without finished rows: every segment that has one (``below`` None: at a refill, one
    cache copy each, as a single batch would make), or only the segments whose live share fell to
    ``below`` (once no prompt waits). Segments with no live row are dropped. Measured: compacting
    segment by segment while prompts wait was 3% slower at 256 prompts in batches of 64; once none
    waits it was 4% faster (fp32, 64 prompts in one batch) than compacting them together."""
    out = []
    for seg, token in batch:
        k = sum(seg.live)
        if k == 0:
            continue
        if k < len(seg.rows) and (below is None or k <= below * len(seg.rows)):
            token = seg.compact(token)
        out.append((seg, token))
    return out


def _merge_waste(rows_a: int, used_a: int, rows_b: int, used_b: int) -> int:
    """Padded row-columns added by right-aligning two segments (rows, used cache columns) in one cache."""
    c = max(used_a, used_b)
    return rows_a * (c - used_a) + rows_b * (c - used_b)


def _segments(widths: Sequence[int], cost: float) -> list[tuple[int, int]]:
    """Split rows sorted by width into contiguous segments, each decoded over its own cache.

    A segment's cache is as wide as its widest row, so every other row pays padding columns in
    every decode step; each segment also costs a few more small kernel calls per layer and step,
    counted as ``cost`` row-columns. Minimises padded row-columns plus ``cost`` per segment
    (exact, by dynamic programming over the sorted widths)."""
    n = len(widths)
    best = [0] + [0] * n  # best[e]: least cost of rows[:e]
    cut = [0] * (n + 1)
    for e in range(1, n + 1):
        best[e], cut[e] = min((best[a] + (e - a) * widths[e - 1] + cost, a) for a in range(e))
    bounds, e = [], n
    while e > 0:
        bounds.append((cut[e], e))
        e = cut[e]
    return bounds[::-1]


def _prefill_groups(widths: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Split rows sorted by width into contiguous groups of at most ``budget`` padded tokens each."""
    groups, start = [], 0
    for end in range(1, len(widths) + 1):
        if end > start + 1 and (end - start) * widths[end - 1] > budget:
            groups.append((start, end - 1))
            start = end - 1
    groups.append((start, len(widths)))
    return groups


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix common to all prompts."""
    first = prompts[0]
    n = min(len(p) for p in prompts)
    for i in range(n):
        t = first[i]
        if any(p[i] != t for p in prompts):
            return i
    return n


def sample_top_p(logits: torch.Tensor, temperature: float, top_p: float, uniforms: Sequence[float]) -> torch.Tensor:
    """Sample one token per row by inverse CDF over the nucleus, given one uniform number per row.

    Same distribution as transformers' temperature + top-p warpers: divide by the temperature, keep
    the smallest set of most likely tokens whose mass reaches ``top_p``, renormalise. Only the top 64
    tokens are sorted unless a row's nucleus is wider (then that row is sorted in full).
    """
    probs = torch.softmax(logits / temperature, dim=-1)
    u = torch.tensor(uniforms, dtype=probs.dtype, device=probs.device)
    V = probs.shape[-1]
    k = min(64, V)
    vals, idx = probs.topk(k, dim=-1)
    if top_p < 1.0:
        wide = (vals.sum(-1) < top_p).nonzero().flatten().tolist()
    else:
        wide = list(range(probs.shape[0]))
    chosen = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    narrow = [i for i in range(probs.shape[0]) if i not in set(wide)]
    if narrow:
        n = torch.tensor(narrow, device=probs.device)
        chosen[n] = _pick(vals[n], idx[n], top_p, u[n])
    for i in wide:
        v, ix = probs[i].sort(descending=True)
        chosen[i] = _pick(v[None], ix[None], top_p, u[i : i + 1])[0]
    return chosen


def _pick(vals: torch.Tensor, idx: torch.Tensor, top_p: float, u: torch.Tensor) -> torch.Tensor:
    before = vals.cumsum(-1) - vals  # mass strictly before each token (descending order)
    kept = torch.where(before < top_p, vals, torch.zeros_like(vals)) if top_p < 1.0 else vals
    cdf = kept.cumsum(-1)
    target = u[:, None] * cdf[:, -1:]
    pos = torch.searchsorted(cdf, target).clamp(max=vals.shape[-1] - 1)
    # Never land on a zero-probability slot (possible only through rounding at the edges).
    pos = torch.minimum(pos, (kept > 0).sum(-1, keepdim=True) - 1)
    return idx.gather(-1, pos).squeeze(-1)


def roofline_tokens_per_s(n_params: int, tflops: float) -> float:
    """Upper bound on decode throughput from compute alone: 2 FLOPs per parameter per token."""
    return tflops * 1e12 / (2 * n_params) if n_params else math.inf
