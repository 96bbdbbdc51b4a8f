"""A decode step's C kernels (``resources/native/decode_step.c``: attention, the greedy choice, the
rotary embedding, the residual add with the RMS norm):
built once per machine, called by ctypes.

Optional by design: it is compiled on first use with the system C compiler (``$CC`` or ``cc``, with
``-O3 -march=native -ffast-math -fopenmp``, linked without ``-ffast-math``, see FLAGS) into ``$PSPO_EVAL_HOME/native/<hash>/``, the hash
covering the source, the flags, the compiler's version and this CPU's feature flags, so a cache
shared between machines never runs code built for another CPU. Where there is no compiler, the
build fails, or ``PSPO_EVAL_NATIVE=0``, :func:`kernel` returns None and the decoder keeps its torch
form (same arithmetic, slower). The library links the OpenMP runtime by its soname, which resolves to
the ``libgomp.so.1`` torch has already loaded, so both share one thread pool.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from pspo_eval.machine import cpu_flags
from pspo_eval.paths import home, resources_dir

# Compiled with -ffast-math (vector expf, reassociated sums) but linked without it: a library linked
# with -ffast-math by gcc 12 carries crtfastmath.o, which at load time sets flush-to-zero for the
# whole process (numpy and torch then lose subnormal floats; hypothesis caught it).
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC"]
LINK_FLAGS = ["-shared", "-fopenmp"]
SOURCE = resources_dir() / "native" / "decode_step.c"
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_SUFFIX = {torch.bfloat16: "bf16", torch.float32: "f32"}  # the kernels' variants, by tensor dtype


def enabled() -> bool:
    return os.environ.get("PSPO_EVAL_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def build(source: Path, out_dir: Path, compiler: str, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile ``source`` into ``out_dir`` (atomically: concurrent builds cannot see half a file).
    ``extra_flags`` come after FLAGS (the tests build the portable paths with ``-mno-avx512f``)."""
    flags = [*FLAGS, *extra_flags]
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    cpu = " ".join(sorted(cpu_flags())) or platform.processor()
    key = hashlib.sha256("\0".join([source.read_text(), " ".join(flags + LINK_FLAGS), version, cpu]).encode()).hexdigest()
    target = out_dir / key[:16] / "decode_step.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built, obj = Path(tmp) / target.name, Path(tmp) / "decode_step.o"
        for cmd in ([compiler, *flags, "-c", str(source), "-o", str(obj)],
                    [compiler, *LINK_FLAGS, str(obj), "-o", str(built), "-lm"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[-2000:]}")
        os.replace(built, target)
    return target


@functools.lru_cache(maxsize=1)
def kernel() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (disabled, no compiler, or the build failed; warned once)."""
    if not enabled() or os.name != "posix":
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None
    try:
        return load(build(SOURCE, home() / "native", compiler))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        import warnings

        warnings.warn(f"pspo-eval: the decode-step kernels are unavailable ({exc}); using the torch form", stacklevel=2)
        return None


def load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for suffix in _SUFFIX.values():
        fn = getattr(lib, f"decode_attention_{suffix}")
        fn.restype = ctypes.c_int
        fn.argtypes = [_PTR] * 7 + [_I64, _PTR] + [_I64] * 5 + [_I64] * 4 + [ctypes.c_float, ctypes.c_int] + [_PTR] * 3
        fn = getattr(lib, f"argmax_columns_{suffix}")
        fn.restype = ctypes.c_int
        fn.argtypes = [_PTR, _I64, _I64, _PTR, ctypes.c_int]
    for suffix in _SUFFIX.values():
        fn = getattr(lib, f"add_rms_{suffix}")
        fn.restype = ctypes.c_int
        fn.argtypes = [_PTR, _I64, _I64, _PTR, _I64, _I64, _PTR, ctypes.c_float, _PTR, ctypes.c_int]
    lib.rope_bf16.restype = ctypes.c_int
    lib.rope_bf16.argtypes = [_PTR, _I64, _I64, _I64, _PTR, _PTR, _I64, _PTR, _PTR, _PTR, _PTR] + [_I64] * 5 + [ctypes.c_int]
    return lib


def attends(dtype: torch.dtype) -> bool:
    """Whether :func:`decode_attention` runs caches of this dtype here (the kernel builds and has it)."""
    return dtype in _SUFFIX and kernel() is not None


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor,
                     prefix: tuple[torch.Tensor, torch.Tensor] | None = None, lib: ctypes.CDLL | None = None,
                     live: torch.Tensor | None = None, new: tuple[torch.Tensor, torch.Tensor, int] | None = None,
                     ) -> torch.Tensor | None:
    """The kernel's attention for q [B, H, 1, D] over k, v [B, KV, S, D] (columns where ``valid`` [B, S]),
    after ``prefix`` ([1, KV, P, D] each) when given; [B, H, 1, D]. ``live`` ([B] bool): rows that are
    False read nothing and get zeros. ``new`` (key [B, KV, D], value [B, KV, D], column): written into
    k and v at that column first (live rows). None where the kernel cannot run these tensors
    (unavailable, not on CPU, another dtype, rows of the cache not contiguous); then nothing is
    written. ``lib``: another build (default :func:`kernel`)."""
    lib = lib or kernel()
    suffix = _SUFFIX.get(k.dtype)
    if lib is None or suffix is None or k.device.type != "cpu" or q.dtype != k.dtype or v.dtype != k.dtype:
        return None
    B, H, _, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    if any(t.stride(-1) != 1 or t.stride(-2) != D for t in (k, v)):
        return None
    if new is not None and (new[0].dtype != k.dtype or new[1].dtype != k.dtype or not 0 <= new[2] < S):
        return None
    kn, vn = (None, None) if new is None else new[:2]
    q3 = q[:, :, 0]
    st = (ctypes.c_int64 * 10)(*q3.stride(), *(kn.stride() if kn is not None else (0,) * 3),
                               *(vn.stride() if vn is not None else (0,) * 3), new[2] if new is not None else 0)
    mask = valid.contiguous().view(torch.uint8)
    if prefix is not None:
        pk, pv = (p[0].to(k.dtype).contiguous() for p in prefix)
        P = pk.shape[1]
    else:
        pk = pv = k  # not read (P = 0)
        P = 0
    out = torch.empty(B, H, D, dtype=q.dtype)
    rows = None if live is None else live.contiguous().view(torch.uint8)
    failed = getattr(lib, f"decode_attention_{suffix}")(
        q3.data_ptr(), k.data_ptr(), v.data_ptr(), mask.data_ptr(), None if rows is None else rows.data_ptr(),
        pk.data_ptr(), pv.data_ptr(), P,
        out.data_ptr(), B, KV, H // KV, S, D, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        D**-0.5, torch.get_num_threads(), None if kn is None else kn.data_ptr(), None if vn is None else vn.data_ptr(),
        ctypes.addressof(st),
    )
    if failed:
        raise MemoryError("decode-attention kernel: out of memory")
    return out.view(B, H, 1, D)


def add_rms(x: torch.Tensor, y: torch.Tensor | None, weight: torch.Tensor, eps: float,
            lib: ctypes.CDLL | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The residual add and RMS norm of a decoder layer in one pass: x += y (in place; y None: no
    add), then (x, h) with h = weight · x / sqrt(mean(x²) + eps) in torch's float32 arithmetic and
    summation order (see the kernel's comment; the caller checks the bits at first use). x [..., N]
    contiguous, y the same shape with any strides, weight [N]. None where the kernel cannot run these
    tensors (then x is unchanged)."""
    lib = lib or kernel()
    suffix = _SUFFIX.get(x.dtype)
    if lib is None or suffix is None or x.device.type != "cpu" or not x.is_contiguous():
        return None
    N = x.shape[-1]
    if weight.dtype != x.dtype or weight.shape != (N,) or (y is not None and (y.dtype != x.dtype or y.shape != x.shape)):
        return None
    y2 = None if y is None else y.reshape(-1, N)
    weight = weight.contiguous()
    h = torch.empty_like(x, memory_format=torch.contiguous_format)
    if getattr(lib, f"add_rms_{suffix}")(
        x.data_ptr(), x.numel() // max(N, 1), N, None if y2 is None else y2.data_ptr(),
        0 if y2 is None else y2.stride(0), 0 if y2 is None else y2.stride(1), weight.data_ptr(), eps,
        h.data_ptr(), torch.get_num_threads(),
    ):
        raise MemoryError("add-rms kernel: out of memory")
    return x, h


def argmax_columns(x: torch.Tensor, lib: ctypes.CDLL | None = None) -> torch.Tensor | None:
    """For x [V, B] (contiguous), the first index of each column's maximum ([B], int64), as
    ``x.argmax(0)`` for finite values; None where the kernel cannot run it."""
    lib = lib or kernel()
    suffix = _SUFFIX.get(x.dtype)
    if lib is None or suffix is None or x.device.type != "cpu" or x.dim() != 2 or not x.is_contiguous():
        return None
    if x.shape[0] >= 2**31:
        return None  # the kernel keeps indices in 32 bits
    out = torch.empty(x.shape[1], dtype=torch.long)
    if getattr(lib, f"argmax_columns_{suffix}")(x.data_ptr(), x.shape[0], x.shape[1], out.data_ptr(), torch.get_num_threads()):
        raise MemoryError("argmax kernel: out of memory")
    return out


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, H: int, KV: int, D: int,
         lib: ctypes.CDLL | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rotary embedding of the query and key heads of x ([B, T, N], any strides; the first (H + KV)·D
    of N), bf16 only: (q [B, H, T, D], k [B, KV, T, D]), the bits torch's bf16 arithmetic gives, in the
    memory layout torch's elementwise ops would give them (that of their slices of x: a matrix
    product's bits depend on its operands' layout, so the decoder's tokens stay exactly those of the
    torch form). cos, sin: [B, T, D]. None where the kernel cannot run these tensors."""
    lib = lib or kernel()
    if lib is None or x.dtype != torch.bfloat16 or cos.dtype != x.dtype or sin.dtype != x.dtype or x.device.type != "cpu":
        return None
    B, T, _ = x.shape
    if cos.shape != (B, T, D) or sin.shape != (B, T, D):
        return None
    q = _like_elementwise(x[..., : H * D].view(B, T, H, D).transpose(1, 2))
    k = _like_elementwise(x[..., H * D : (H + KV) * D].view(B, T, KV, D).transpose(1, 2))
    def flat(sb: int, st: int) -> bool:  # row b, position t at offset b*T + t
        return (B == 1 or sb == T) and (T == 1 or st == 1)

    columns = flat(x.stride(0), x.stride(1)) and all(flat(t.stride(0), t.stride(2)) for t in (q, k))
    if columns:  # the transposed layout: cos, sin as [D, B*T] too, and vector loops over the columns
        cos, sin = cos.reshape(B * T, D).t().contiguous(), sin.reshape(B * T, D).t().contiguous()
    else:
        cos, sin = cos.contiguous(), sin.contiguous()
    qs, ks = (torch.tensor(t.stride(), dtype=torch.long) for t in (q, k))
    if lib.rope_bf16(x.data_ptr(), x.stride(0), x.stride(1), x.stride(2), cos.data_ptr(), sin.data_ptr(), int(columns),
                     q.data_ptr(), qs.data_ptr(), k.data_ptr(), ks.data_ptr(), B, T, H, KV, D, torch.get_num_threads()):
        return None  # a head size it does not take
    return q, k


def _like_elementwise(t: torch.Tensor) -> torch.Tensor:
    """An empty tensor shaped as ``t`` whose dimensions lie in memory in the order of ``t``'s strides
    (outermost first), as torch's elementwise ops lay out their results (empty_like gives a
    contiguous tensor where ``t`` is not dense)."""
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    buf = torch.empty([t.shape[d] for d in order], dtype=t.dtype, device=t.device)
    return buf.permute([order.index(d) for d in range(t.dim())])
