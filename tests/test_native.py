"""The decode-step C kernels: attention against the decoder's torch form computed in float32, the
greedy choice against torch.argmax."""

from __future__ import annotations

import ctypes
import os
import shutil
from types import SimpleNamespace

import pytest
import torch

from pspo_eval.generation import native
from pspo_eval.generation.engine import FastDecoder
from pspo_eval.machine import cpu_flags

# CI has a C compiler: there the kernel must build; elsewhere a machine without one skips.
needs_kernel = pytest.mark.skipif(
    not os.environ.get("CI") and shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler"
)


def _torch_form(q, k, v, valid, prefix):
    return FastDecoder._decode_attention(SimpleDecoder(), q, k, v, valid, prefix)


class SimpleDecoder:
    native = False


def _case(dtype, S, P, seed=0, D=16):
    gen = torch.Generator().manual_seed(seed)
    B, H, KV = 5, 6, 2

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    valid = torch.rand(B, S, generator=gen) > 0.4
    valid[:, -1] = True  # every row attends to its own newest token
    prefix = (rnd(1, KV, P, D), rnd(1, KV, P, D)) if P else None
    return rnd(B, H, 1, D), rnd(B, KV, S, D), rnd(B, KV, S, D), valid, prefix


@pytest.fixture(scope="module", params=["native", "portable"])
def lib(request, tmp_path_factory):
    """The kernel as built here, and built without AVX-512 (the plain C paths other CPUs run)."""
    if request.param == "native":
        return native.kernel()
    compiler = shutil.which(os.environ.get("CC", "cc"))
    assert compiler is not None
    return native.load(native.build(native.SOURCE, tmp_path_factory.mktemp("portable"), compiler, ("-mno-avx512f",)))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("S,P,D", [(1, 0, 16), (37, 0, 16), (37, 11, 16), (200, 40, 16), (1, 0, 64), (37, 11, 64),
                                   (203, 42, 64), (9, 5, 32), (33, 3, 128)])
def test_kernel_equals_the_float32_torch_form(lib, dtype, S, P, D):
    """Every path of the kernel: any head size, the vector paths (D a multiple of 16 / 32, blocks of
    four key rows with remainders) and the D = 64 register path, with and without a shared prefix."""
    assert lib is not None
    q, k, v, valid, prefix = _case(dtype, S, P, D=D)
    got = native.decode_attention(q, k, v, valid, prefix, lib=lib)
    assert got is not None and got.dtype == dtype and got.shape == q.shape
    as32 = None if prefix is None else tuple(p.float() for p in prefix)
    exact = _torch_form(q.float(), k.float(), v.float(), valid, as32)
    if dtype == torch.float32:
        torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-6)
    else:  # float32 inside, one rounding at the end: at most the torch bf16 form's error
        err = (got.float() - exact).abs().max()
        assert err <= 1e-2
        assert err <= (_torch_form(q, k, v, valid, prefix).float() - exact).abs().max()


@needs_kernel
@pytest.mark.skipif("avx512_bf16" not in cpu_flags(), reason="both bf16 score paths need AVX512-BF16")
@pytest.mark.parametrize("S,P,G", [(1, 0, 3), (37, 11, 3), (203, 42, 3), (64, 48, 1), (30, 5, 4), (41, 0, 7)])
def test_both_bf16_score_paths_give_the_same_bits(tmp_path, S, P, G):
    """The dot-product instruction and the float32 FMAs (PSPO_SCORES_FMA in the kernel; which one
    runs depends on the CPU) give the same scores bit for bit, remainders of four and masked columns
    included, and so the same attention."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    assert compiler is not None
    libs = [native.load(native.build(native.SOURCE, tmp_path / str(f), compiler, (f"-DPSPO_SCORES_FMA={f}",))) for f in (0, 1)]
    gen = torch.Generator().manual_seed(S * 100 + G)
    B, KV, D = 6, 3, 64
    q = (torch.randn(B, KV * G, 1, D, generator=gen) * 2).bfloat16()
    k, v = (torch.randn(B, KV, S, D, generator=gen).bfloat16() for _ in range(2))
    valid = torch.rand(B, S, generator=gen) > 0.3
    valid[:, -1] = True
    pk, pv = (torch.randn(1, KV, P, D, generator=gen).bfloat16() for _ in range(2))
    scores = []
    for lib in libs:
        sc = torch.empty(G, P + S)
        fn = lib.decode_scores_bf16
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 4 + [ctypes.c_float, ctypes.c_void_p]
        q0, k0, ok = q[0, :G, 0].contiguous(), k[0, 0].contiguous(), valid[0].contiguous().view(torch.uint8)
        assert fn(q0.data_ptr(), pk[0, 0].contiguous().data_ptr(), k0.data_ptr(), ok.data_ptr(), P, S, G, D, 0.125, sc.data_ptr()) == 0
        scores.append(sc)
    assert torch.equal(scores[0], scores[1])
    dots = q[0, :G, 0].float() @ torch.cat([pk[0, 0], k[0, 0]]).float().t() * 0.125  # and they are the scores
    read = torch.cat([torch.ones(P, dtype=torch.bool), valid[0]])
    torch.testing.assert_close(scores[0][:, read], dots[:, read], rtol=1e-5, atol=1e-5)
    live = torch.tensor([True, True, False, True, True, True])
    dot, fma = (native.decode_attention(q, k, v, valid, (pk, pv), lib=lib, live=live) for lib in libs)
    assert dot is not None and torch.equal(dot, fma)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("D", [16, 64])
def test_masked_columns_do_not_count_whatever_they_hold(lib, dtype, D):
    q, k, v, valid, _ = _case(dtype, 30, 0, seed=1, D=D)
    valid[:, 8:12] = False  # a whole block of four masked columns, as well as scattered ones
    want = native.decode_attention(q, k, v, valid, lib=lib)
    k2, v2 = k.clone(), v.clone()
    k2[~valid[:, None, :].expand_as(k[..., 0])] = 1e4  # garbage where no row attends
    v2[~valid[:, None, :].expand_as(v[..., 0])] = float("nan")
    assert torch.equal(native.decode_attention(q, k2, v2, valid, lib=lib), want)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finished_rows_read_nothing_and_the_others_are_unchanged(lib, dtype):
    q, k, v, valid, prefix = _case(dtype, 37, 11, seed=2, D=64)
    want = native.decode_attention(q, k, v, valid, prefix, lib=lib)
    live = torch.tensor([True, False, True, True, False])
    k2, v2 = k.clone(), v.clone()
    k2[~live], v2[~live] = float("nan"), float("nan")  # a finished row's cache is not read at all
    got = native.decode_attention(q, k2, v2, valid, prefix, lib=lib, live=live)
    assert torch.equal(got[live], want[live])
    assert torch.equal(got[~live], torch.zeros_like(got[~live]))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_steps_key_and_value_are_written_by_the_kernel(lib, dtype):
    """With ``new`` (strided, as the decoder's rotary output is) the kernel writes the step's key and
    value at the column first: the same cache and output as torch writing them, then the kernel."""
    q, k, v, valid, prefix = _case(dtype, 37, 11, seed=3, D=64)
    gen = torch.Generator().manual_seed(4)
    kn, vn = (torch.randn(64, 2, 5, generator=gen).to(dtype).permute(2, 1, 0) for _ in range(2))  # [B, KV, D], strided
    q = q.transpose(0, 2).contiguous().transpose(0, 2)  # queries with other strides too
    k_want, v_want = k.clone(), v.clone()
    k_want[:, :, 30], v_want[:, :, 30] = kn, vn
    want = native.decode_attention(q, k_want, v_want, valid, prefix, lib=lib)
    got = native.decode_attention(q, k, v, valid, prefix, lib=lib, new=(kn, vn, 30))
    assert torch.equal(got, want) and torch.equal(k, k_want) and torch.equal(v, v_want)
    assert native.decode_attention(q, k, v, valid, prefix, lib=lib, new=(kn, vn, 37)) is None  # past the cache


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("V,B", [(1, 1), (7, 3), (1000, 16), (4099, 37), (49152, 64)])
def test_greedy_choice_is_the_first_index_of_the_maximum(lib, dtype, V, B):
    """Vector (B a multiple of 16) and scalar paths; ties inside and across the threads' ranges keep
    the lower index, as torch.argmax does."""
    gen = torch.Generator().manual_seed(V + B)
    x = (torch.randn(V, B, generator=gen) * 4).round().to(dtype)  # few distinct values: many ties
    first = max(V // 2 - 1, 0)
    x[first, 0] = x[V - 1, 0] = 100.0  # a tie between the two halves of the vocabulary (two threads' ranges)
    got = native.argmax_columns(x, lib=lib)
    assert got is not None and got.dtype == torch.long
    assert torch.equal(got, x.float().argmax(0))
    assert got[0] == first


@needs_kernel
def test_greedy_choice_takes_only_what_it_can_read():
    x = torch.randn(50, 32)
    assert native.argmax_columns(x.t()) is None  # not contiguous
    assert native.argmax_columns(x.double()) is None
    assert native.argmax_columns(x[0]) is None


@needs_kernel
@pytest.mark.parametrize("B,T,transposed", [(1, 1, True), (37, 1, True), (5, 7, True), (5, 7, False), (3, 40, False)])
def test_rotary_kernel_gives_the_torch_forms_bits_and_layout(lib, B, T, transposed):
    """Both paths (columns of the transposed decode layout, and rows of a plain one) against
    FastDecoder._rope in bf16: the same bits, laid out as torch's own result (the next products'
    bits depend on it)."""
    H, KV, D = 6, 2, 64
    gen = torch.Generator().manual_seed(B * T)
    flat = torch.randn(B * T, (H + 2 * KV) * D, generator=gen).bfloat16()
    x = (flat.t().contiguous().t() if transposed else flat).reshape(B, T, -1)
    cos, sin = (torch.randn(B, T, D, generator=gen).bfloat16() for _ in range(2))
    got = native.rope(x, cos, sin, H, KV, D, lib=lib)
    assert got is not None
    for out, (a, n) in zip(got, [(0, H), (H * D, KV)]):
        want = FastDecoder._rope(x[..., a : a + n * D].view(B, T, n, D).transpose(1, 2), cos[:, None], sin[:, None])
        assert torch.equal(out, want)
        assert [s for s, m in zip(out.stride(), out.shape) if m > 1] == [s for s, m in zip(want.stride(), want.shape) if m > 1]
    assert native.rope(x.float(), cos.float(), sin.float(), H, KV, D, lib=lib) is None  # bf16 only


def _rms_torch_form(x, w, eps):
    return FastDecoder._rms(SimpleNamespace(eps=eps), x, w)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("N", [8, 24, 100, 576, 960, 2048, 16384])
@pytest.mark.parametrize("R,layout", [(1, "transposed"), (37, "transposed"), (256, "transposed"), (33, "rows"), (5, "none")])
def test_add_rms_gives_torch_add_and_the_decoders_norm_bit_for_bit(lib, dtype, N, R, layout):
    """The fused residual add and RMS norm against torch's add and FastDecoder._rms: the same bits
    (the kernel follows torch's summation order), for y as _lin leaves it at decode (transposed), as
    rows (prefill), and with no add; x is updated in place."""
    gen = torch.Generator().manual_seed(N + R)
    x = (torch.randn(R, 1, N, generator=gen) * torch.rand(R, 1, 1, generator=gen) * 4).to(dtype)
    y = {"transposed": torch.randn(N, R, generator=gen).to(dtype).t().reshape(R, 1, N),
         "rows": torch.randn(R, 1, N, generator=gen).to(dtype), "none": None}[layout]
    w = (torch.randn(N, generator=gen) * 0.3 + 1).to(dtype)
    want_x = x if y is None else x + y
    want_h = _rms_torch_form(want_x, w, 1e-5)
    got = native.add_rms(x, y, w, 1e-5, lib=lib)
    assert got is not None and got[0] is x
    assert torch.equal(x, want_x) and torch.equal(got[1], want_h) and got[1].is_contiguous()


@needs_kernel
def test_add_rms_takes_only_what_it_can_read():
    x, w = torch.randn(4, 16), torch.ones(16)
    assert native.add_rms(x.t(), None, torch.ones(4), 1e-5) is None  # x not contiguous
    assert native.add_rms(x.double(), None, w.double(), 1e-5) is None  # no float64 variant
    assert native.add_rms(x, None, w.bfloat16(), 1e-5) is None  # weight of another dtype
    assert native.add_rms(x, torch.randn(4, 8), w, 1e-5) is None  # y of another shape


@needs_kernel
def test_layouts_it_cannot_run_fall_back_to_the_torch_form(monkeypatch):
    q, k, v, valid, _ = _case(torch.float32, 20, 0)
    strided = torch.randn(5, 2, 20, 32)[..., ::2]  # rows of D not contiguous
    assert native.decode_attention(q, strided, v, valid) is None
    assert native.decode_attention(q.to(torch.float64), k.double(), v.double(), valid) is None
    # a cache sliced along its columns keeps contiguous rows: the kernel takes its strides
    wide_k, wide_v = torch.randn(5, 2, 50, 16), torch.randn(5, 2, 50, 16)
    got = native.decode_attention(q, wide_k[:, :, :20], wide_v[:, :, :20], valid)
    want = _torch_form(q, wide_k[:, :, :20].contiguous(), wide_v[:, :, :20].contiguous(), valid, None)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    native.kernel.cache_clear()
    monkeypatch.setenv("PSPO_EVAL_NATIVE", "0")
    try:
        assert native.kernel() is None and native.decode_attention(q, k, v, valid) is None
    finally:
        native.kernel.cache_clear()


def test_a_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    native.kernel.cache_clear()
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    fake = tmp_path / "no-such-compiler"
    fake.write_text("#!/bin/sh\necho 'broken compiler' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PSPO_EVAL_HOME", str(tmp_path / "home"))
    try:
        with pytest.warns(UserWarning, match="broken compiler"):
            assert native.kernel() is None
    finally:
        native.kernel.cache_clear()


@needs_kernel
def test_loading_the_kernel_keeps_subnormal_floats():
    """Built with -ffast-math, the library must not switch the process to flush-to-zero on load."""
    import subprocess
    import sys

    code = (
        "import numpy as np, torch\n"
        "from pspo_eval.generation import native\n"
        "assert native.kernel() is not None\n"
        "tiny = np.float32(1e-40) * np.float32(1.0)\n"
        "assert tiny != 0 and torch.tensor(1e-40, dtype=torch.float32).mul(1.0).item() != 0, 'flush-to-zero'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
