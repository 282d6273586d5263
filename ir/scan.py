"""Mamba-1 selective scan of the SSM branch (prefill: sequential and chunked; decode: one state
update) and the inner RMSNorms on the x_proj output. Twins: `reference.selective_scan`,
`reference.selective_state_update`, `reference.ssm_input_split` [spec §3.3 steps 2-5, §4.3].

Layouts: the channel axis D is the contiguous one everywhere, so every step of the recurrence
vectorises across channels without gathers or horizontal sums:
  u, delta, z, y   [batch, L, D]   as the projections write them (in_proj x-part after the conv,
                                   dt_proj output, gate); nothing is transposed
  B, C             [batch, L, N]   the x_proj split (`ssm_input_split` below)
  A                [N, D] float32  = -exp(A_log).T, precomputed once at load (default; must be
                                   <= 0, as -exp is); with `a_log=True` the parameter is A_log.T
                                   [N, D] in `wdtype` and the kernel takes -exp itself (N*D extra
                                   exps per call, per channel tile)
  D, delta_bias    [D] in `wdtype`
  state            [batch, N, D] float32 (the reference's [batch, D, N] transposed): the
                   prefill scans take the initial state and write the final one; the decode
                   update advances it in place
  step_mask        [batch, L] bool (only with `masked=True`)
Batch and L are symbolic. All state math is float32: inputs are upcast, y is cast to `dtype`.
Every tensor must be contiguous and 64-byte aligned (its own allocation, not an offset view): TVM
emits aligned vector loads, and a misaligned pointer crashes.

delta = softplus(delta + delta_bias) (threshold 20), h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,
y_t = (C_t . h_t + D u_t) * silu(z_t). Where step_mask is False, delta is forced to 0 (the state is
carried unchanged) and y is 0.

Structure: the channels are processed in tiles of `tile` channels (default `pick_tile`: 64 at
Hymba size); the state tile h[N, tile] lives in a local buffer for a whole scan. Every elementwise
step is its own block looping over the tile innermost, so a schedule can vectorise across
channels and run tiles in parallel. The recurrence is a reduction block over t (initialised from
the incoming state), and C.h a reduction over n. `te.scan` cannot be lowered in TVM 0.27, hence
TVMScript. The decays are 2^(delta * A log2 e) with A log2 e formed once per tile
(`exp2_nonpos_f32`): the scan is bound by the FMA pipes, N exps per token and channel.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.script import tirx as T

from .common import check_dtype, columns_of, f32, finish, seq_var
from .fastmath import LOG2E, exp2_nonpos_f32, exp_f32, let, silu_f32, softplus_f32

STATE_DTYPE = "float32"


def _c(v: float) -> tirx.PrimExpr:
    return tirx.const(v, "float32")


def _names(d_inner, d_state, dtype, wdtype, masked, a_log, tile):
    tag = f"{d_inner}x{d_state}_{dtype}_w{wdtype}_t{tile}"
    return tag + ("_masked" if masked else "") + ("_alog" if a_log else "")


TILES = (64, 32, 16, 8, 4, 2, 1)


def pick_tile(d_inner: int, max_tile: int = 64) -> int:
    """The default channel tile: the largest of 64, 32, ... (at most `max_tile`) dividing d_inner
    (64 at Hymba size: measured fastest on the CPU, 12.4 ms vs 14.2 (32) and 15.6 (16) for
    L = 1024 on one core; a GPU schedule asks for at most 32, one warp of channel lanes)."""
    return next(t for t in TILES if t <= max_tile and d_inner % t == 0)


def _check(d_inner, d_state, dtype, wdtype, tile):
    check_dtype(dtype)
    check_dtype(wdtype)
    if d_inner % tile:
        raise ValueError(f"d_inner {d_inner} is not a multiple of the channel tile {tile}")
    if d_state < 1:
        raise ValueError("d_state must be positive")


def _helpers(dtype, wdtype, a_log):
    """Casts to float32 (TVMScript buffer loads carry no Python-visible dtype) and the A entry."""
    def act(v):
        return v if dtype == "float32" else T.Cast("float32", v)

    def wgt(v):
        return v if wdtype == "float32" else T.Cast("float32", v)

    def a_entry(v):  # v = A[n, d] or A_log[n, d] -> A log2(e), the decay exponent per unit delta
        a = -exp_f32(wgt(v)) if a_log else v  # no Let: v may be a bf16 load
        return a * _c(LOG2E)

    def out(v):
        return v if dtype == "float32" else T.Cast(dtype, v)

    return act, wgt, a_entry, out


def _step_exprs(dtype, wdtype, a_log, masked):
    """The per-step values shared by the prefill scans, as expression helpers (plain functions:
    TVMScript macros cost a walk of the Python stack per call at parse time): the pre-activation
    delta + bias, delta of one step (0 where the step is masked) from it, and y of one step from
    acc = C.h (0 where masked). The pre-activation is stored to a float32 local (dx) on purpose:
    softplus binds its argument with Lets, and TVM 0.27's bf16 legaliser does not rewrite loads
    inside a Let's value (a bf16 load there is read as an integer after storage legalisation)."""
    act, wgt, _, out = _helpers(dtype, wdtype, a_log)

    def delta_in(delta, bias, vb, t, d):
        return act(delta[vb, t, d]) + wgt(bias[d])

    def delta_of(dx_value, mask, vb, t):
        if masked:
            return tirx.Select(mask[vb, t], softplus_f32(dx_value), _c(0.0))
        return softplus_f32(dx_value)

    def y_of(acc_value, Dv, u, z, mask, vb, t, d):
        y = out((acc_value + wgt(Dv[d]) * act(u[vb, t, d])) * silu_f32(act(z[vb, t, d])))
        if masked:
            return tirx.Select(mask[vb, t], y, out(_c(0.0)))
        return y

    return delta_in, delta_of, y_of


def _prefill_signature(body, Dn, N, dtype, wdtype, adtype, masked):
    """The prefill PrimFunc around the macro `body` (the parameter list differs with the mask)."""
    if masked:
        @T.prim_func(s_tir=True)
        def scan(u_h: T.handle, delta_h: T.handle, A_h: T.handle, B_h: T.handle, C_h: T.handle,
                 D_h: T.handle, z_h: T.handle, bias_h: T.handle, h0_h: T.handle, mask_h: T.handle,
                 y_h: T.handle, hout_h: T.handle):
            Bt, L = T.int64(), T.int64()
            u = T.match_buffer(u_h, (Bt, L, Dn), dtype)
            delta = T.match_buffer(delta_h, (Bt, L, Dn), dtype)
            A = T.match_buffer(A_h, (N, Dn), adtype)
            Bm = T.match_buffer(B_h, (Bt, L, N), dtype)
            Cm = T.match_buffer(C_h, (Bt, L, N), dtype)
            Dv = T.match_buffer(D_h, (Dn,), wdtype)
            z = T.match_buffer(z_h, (Bt, L, Dn), dtype)
            bias = T.match_buffer(bias_h, (Dn,), wdtype)
            h0 = T.match_buffer(h0_h, (Bt, N, Dn), STATE_DTYPE)
            mask = T.match_buffer(mask_h, (Bt, L), "bool")
            y = T.match_buffer(y_h, (Bt, L, Dn), dtype)
            hout = T.match_buffer(hout_h, (Bt, N, Dn), STATE_DTYPE)
            body(u, delta, A, Bm, Cm, Dv, z, bias, h0, mask, y, hout, Bt, L)
    else:
        @T.prim_func(s_tir=True)
        def scan(u_h: T.handle, delta_h: T.handle, A_h: T.handle, B_h: T.handle, C_h: T.handle,
                 D_h: T.handle, z_h: T.handle, bias_h: T.handle, h0_h: T.handle,
                 y_h: T.handle, hout_h: T.handle):
            Bt, L = T.int64(), T.int64()
            u = T.match_buffer(u_h, (Bt, L, Dn), dtype)
            delta = T.match_buffer(delta_h, (Bt, L, Dn), dtype)
            A = T.match_buffer(A_h, (N, Dn), adtype)
            Bm = T.match_buffer(B_h, (Bt, L, N), dtype)
            Cm = T.match_buffer(C_h, (Bt, L, N), dtype)
            Dv = T.match_buffer(D_h, (Dn,), wdtype)
            z = T.match_buffer(z_h, (Bt, L, Dn), dtype)
            bias = T.match_buffer(bias_h, (Dn,), wdtype)
            h0 = T.match_buffer(h0_h, (Bt, N, Dn), STATE_DTYPE)
            y = T.match_buffer(y_h, (Bt, L, Dn), dtype)
            hout = T.match_buffer(hout_h, (Bt, N, Dn), STATE_DTYPE)
            body(u, delta, A, Bm, Cm, Dv, z, bias, h0, None, y, hout, Bt, L)
    return scan


# ---------------------------------------------------------------------------------------------
# prefill, sequential
# ---------------------------------------------------------------------------------------------

def selective_scan(d_inner: int, d_state: int = 16, dtype: str = "float32", *,
                   wdtype: str = "float32", masked: bool = False, a_log: bool = False,
                   tile: int | None = None, max_tile: int = 64) -> tirx.PrimFunc:
    """Sequential prefill scan, layouts in the module docstring:
    (u, delta, A, B, C, D, z, delta_bias, h0, [step_mask]) -> (y, h_last).
    One pass over t per channel tile; h0 and h_last must be distinct tensors (noalias)."""
    tile = tile or pick_tile(d_inner, max_tile)
    _check(d_inner, d_state, dtype, wdtype, tile)
    Dn, N, W = d_inner, d_state, tile
    act, _, a_entry, _ = _helpers(dtype, wdtype, a_log)
    delta_in, delta_of, y_of = _step_exprs(dtype, wdtype, a_log, masked)
    adtype = wdtype if a_log else "float32"

    @T.macro
    def body(u, delta, A, Bm, Cm, Dv, z, bias, h0, mask, y, hout, Bt, L):
        for b, dc in T.grid(Bt, Dn // W):
            with T.sblock("scan"):
                vb, vdc = T.axis.remap("SS", [b, dc])
                h = T.sblock_alloc_buffer((N, W), "float32", scope="local")
                Al = T.sblock_alloc_buffer((N, W), "float32", scope="local")
                dx = T.sblock_alloc_buffer((W,), "float32", scope="local")
                dl = T.sblock_alloc_buffer((W,), "float32", scope="local")
                acc = T.sblock_alloc_buffer((W,), "float32", scope="local")
                for n, w in T.grid(N, W):
                    with T.sblock("load_A"):
                        vn, vw = T.axis.remap("SS", [n, w])
                        Al[vn, vw] = a_entry(A[vn, vdc * W + vw])
                for t in range(L):
                    for w in range(W):
                        with T.sblock("delta_in"):
                            vt, vw = T.axis.remap("SS", [t, w])
                            dx[vw] = delta_in(delta, bias, vb, vt, vdc * W + vw)
                    for w in range(W):
                        with T.sblock("delta"):
                            vt, vw = T.axis.remap("SS", [t, w])
                            dl[vw] = delta_of(dx[vw], mask, vb, vt)
                    for n, w in T.grid(N, W):
                        with T.sblock("step"):
                            vt, vn, vw = T.axis.remap("RSS", [t, n, w])
                            with T.init():
                                h[vn, vw] = h0[vb, vn, vdc * W + vw]
                            h[vn, vw] = (exp2_nonpos_f32(dl[vw] * Al[vn, vw]) * h[vn, vw]
                                         + dl[vw] * act(u[vb, vt, vdc * W + vw])
                                         * act(Bm[vb, vt, vn]))
                    for n, w in T.grid(N, W):
                        with T.sblock("dot"):
                            vt, vn, vw = T.axis.remap("SRS", [t, n, w])
                            with T.init():
                                acc[vw] = T.float32(0)
                            acc[vw] = acc[vw] + h[vn, vw] * act(Cm[vb, vt, vn])
                    for w in range(W):
                        with T.sblock("out"):
                            vt, vw = T.axis.remap("SS", [t, w])
                            y[vb, vt, vdc * W + vw] = y_of(acc[vw], Dv, u, z, mask, vb, vt,
                                                           vdc * W + vw)
                for n, w in T.grid(N, W):
                    with T.sblock("store"):
                        vn, vw = T.axis.remap("SS", [n, w])
                        # L = 0: h was never initialised by the step block, pass h0 through
                        hout[vb, vn, vdc * W + vw] = T.Select(L > 0, h[vn, vw],
                                                              h0[vb, vn, vdc * W + vw])

    func = _prefill_signature(body, Dn, N, dtype, wdtype, adtype, masked)
    name = _names(d_inner, d_state, dtype, wdtype, masked, a_log, tile)
    return finish(func, "selective_scan", f"selective_scan_{name}")


# ---------------------------------------------------------------------------------------------
# prefill, chunked
# ---------------------------------------------------------------------------------------------

def selective_scan_chunked(d_inner: int, d_state: int = 16, dtype: str = "float32", *,
                           chunk: int = 64, wdtype: str = "float32", masked: bool = False,
                           a_log: bool = False, tile: int | None = None, max_tile: int = 64) -> tirx.PrimFunc:
    """Chunked prefill scan, same signature and result as `selective_scan`, in three passes:
      1. every chunk of `chunk` steps scanned from a zero state, each (batch, channel tile, chunk)
         independent: its end state hc and its sum of delta;
      2. the chunk-start states, serial over chunks, each (batch, tile) independent:
         hs_0 = h0, hs_{c+1} = exp(A sum_c delta) hs_c + hc_c; h_last = hs_{nchunks};
      3. every chunk re-scanned from its true start state hs_c, emitting y (independent as in 1).
    Twice the work of the sequential scan, but L/chunk times more independent work items: the form
    for a GPU (a CPU has enough parallelism in the channel tiles alone). The last chunk may be partial (L need not divide by `chunk`). Scratch: two fp32
    [batch, nchunks, N, D] buffers and one [batch, nchunks, D] (workspace allocations per call)."""
    tile = tile or pick_tile(d_inner, max_tile)
    _check(d_inner, d_state, dtype, wdtype, tile)
    if chunk < 1:
        raise ValueError("chunk must be positive")
    Dn, N, W, TC = d_inner, d_state, tile, chunk
    act, _, a_entry, _ = _helpers(dtype, wdtype, a_log)
    delta_in, delta_of, y_of = _step_exprs(dtype, wdtype, a_log, masked)
    adtype = wdtype if a_log else "float32"

    @T.macro
    def body(u, delta, A, Bm, Cm, Dv, z, bias, h0, mask, y, hout, Bt, L):
        hc = T.alloc_buffer((Bt, (L + (TC - 1)) // TC, N, Dn), "float32")
        dsum = T.alloc_buffer((Bt, (L + (TC - 1)) // TC, Dn), "float32")
        hs = T.alloc_buffer((Bt, (L + (TC - 1)) // TC, N, Dn), "float32")
        # pass 1: per-chunk scans from zero
        for b, dc, c in T.grid(Bt, Dn // W, (L + (TC - 1)) // TC):
            with T.sblock("chunk_scan"):
                vb, vdc, vc = T.axis.remap("SSS", [b, dc, c])
                h = T.sblock_alloc_buffer((N, W), "float32", scope="local")
                Al = T.sblock_alloc_buffer((N, W), "float32", scope="local")
                dx = T.sblock_alloc_buffer((W,), "float32", scope="local")
                dl = T.sblock_alloc_buffer((W,), "float32", scope="local")
                sacc = T.sblock_alloc_buffer((W,), "float32", scope="local")
                for n, w in T.grid(N, W):
                    with T.sblock("load_A1"):
                        vn, vw = T.axis.remap("SS", [n, w])
                        Al[vn, vw] = a_entry(A[vn, vdc * W + vw])
                for tt in range(T.int64(TC)):
                    for w in range(W):
                        with T.sblock("delta_in1"):
                            vtt, vw = T.axis.remap("SS", [tt, w])
                            T.where(vc * TC + tt < L)
                            dx[vw] = delta_in(delta, bias, vb, vc * TC + vtt, vdc * W + vw)
                    for w in range(W):
                        with T.sblock("delta1"):
                            vtt, vw = T.axis.remap("SS", [tt, w])
                            T.where(vc * TC + tt < L)
                            dl[vw] = delta_of(dx[vw], mask, vb, vc * TC + vtt)
                    for n, w in T.grid(N, W):
                        with T.sblock("step1"):
                            vtt, vn, vw = T.axis.remap("RSS", [tt, n, w])
                            T.where(vc * TC + tt < L)
                            with T.init():
                                h[vn, vw] = T.float32(0)
                            h[vn, vw] = (exp2_nonpos_f32(dl[vw] * Al[vn, vw]) * h[vn, vw]
                                         + dl[vw] * act(u[vb, vc * TC + vtt, vdc * W + vw])
                                         * act(Bm[vb, vc * TC + vtt, vn]))
                    for w in range(W):
                        with T.sblock("sum1"):
                            vtt, vw = T.axis.remap("RS", [tt, w])
                            T.where(vc * TC + tt < L)
                            with T.init():
                                sacc[vw] = T.float32(0)
                            sacc[vw] = sacc[vw] + dl[vw]
                for n, w in T.grid(N, W):
                    with T.sblock("store1"):
                        vn, vw = T.axis.remap("SS", [n, w])
                        hc[vb, vc, vn, vdc * W + vw] = h[vn, vw]
                for w in range(W):
                    with T.sblock("store_sum1"):
                        vw = T.axis.remap("S", [w])
                        dsum[vb, vc, vdc * W + vw] = sacc[vw]
        # pass 2: chunk-start states, serial over chunks
        for b, dc in T.grid(Bt, Dn // W):
            with T.sblock("chunk_pass"):
                vb, vdc = T.axis.remap("SS", [b, dc])
                run = T.sblock_alloc_buffer((N, W), "float32", scope="local")
                Al = T.sblock_alloc_buffer((N, W), "float32", scope="local")
                for n, w in T.grid(N, W):
                    with T.sblock("load_A2"):
                        vn, vw = T.axis.remap("SS", [n, w])
                        Al[vn, vw] = a_entry(A[vn, vdc * W + vw])
                        run[vn, vw] = h0[vb, vn, vdc * W + vw]
                for c in range((L + (TC - 1)) // TC):
                    for n, w in T.grid(N, W):
                        with T.sblock("pass_store"):
                            vc, vn, vw = T.axis.remap("SSS", [c, n, w])
                            hs[vb, vc, vn, vdc * W + vw] = run[vn, vw]
                    for n, w in T.grid(N, W):
                        with T.sblock("pass_step"):
                            vc, vn, vw = T.axis.remap("SSS", [c, n, w])
                            run[vn, vw] = (exp2_nonpos_f32(Al[vn, vw] * dsum[vb, vc, vdc * W + vw])
                                           * run[vn, vw]
                                           + hc[vb, vc, vn, vdc * W + vw])
                for n, w in T.grid(N, W):
                    with T.sblock("store2"):
                        vn, vw = T.axis.remap("SS", [n, w])
                        hout[vb, vn, vdc * W + vw] = run[vn, vw]
        # pass 3: per-chunk scans from the true start states, emitting y
        for b, dc, c in T.grid(Bt, Dn // W, (L + (TC - 1)) // TC):
            with T.sblock("chunk_out"):
                vb, vdc, vc = T.axis.remap("SSS", [b, dc, c])
                h = T.sblock_alloc_buffer((N, W), "float32", scope="local")
                Al = T.sblock_alloc_buffer((N, W), "float32", scope="local")
                dx = T.sblock_alloc_buffer((W,), "float32", scope="local")
                dl = T.sblock_alloc_buffer((W,), "float32", scope="local")
                acc = T.sblock_alloc_buffer((W,), "float32", scope="local")
                for n, w in T.grid(N, W):
                    with T.sblock("load_A3"):
                        vn, vw = T.axis.remap("SS", [n, w])
                        Al[vn, vw] = a_entry(A[vn, vdc * W + vw])
                for tt in range(T.int64(TC)):
                    for w in range(W):
                        with T.sblock("delta_in3"):
                            vtt, vw = T.axis.remap("SS", [tt, w])
                            T.where(vc * TC + tt < L)
                            dx[vw] = delta_in(delta, bias, vb, vc * TC + vtt, vdc * W + vw)
                    for w in range(W):
                        with T.sblock("delta3"):
                            vtt, vw = T.axis.remap("SS", [tt, w])
                            T.where(vc * TC + tt < L)
                            dl[vw] = delta_of(dx[vw], mask, vb, vc * TC + vtt)
                    for n, w in T.grid(N, W):
                        with T.sblock("step3"):
                            vtt, vn, vw = T.axis.remap("RSS", [tt, n, w])
                            T.where(vc * TC + tt < L)
                            with T.init():
                                h[vn, vw] = hs[vb, vc, vn, vdc * W + vw]
                            h[vn, vw] = (exp2_nonpos_f32(dl[vw] * Al[vn, vw]) * h[vn, vw]
                                         + dl[vw] * act(u[vb, vc * TC + vtt, vdc * W + vw])
                                         * act(Bm[vb, vc * TC + vtt, vn]))
                    for n, w in T.grid(N, W):
                        with T.sblock("dot3"):
                            vtt, vn, vw = T.axis.remap("SRS", [tt, n, w])
                            T.where(vc * TC + tt < L)
                            with T.init():
                                acc[vw] = T.float32(0)
                            acc[vw] = acc[vw] + h[vn, vw] * act(Cm[vb, vc * TC + vtt, vn])
                    for w in range(W):
                        with T.sblock("out3"):
                            vtt, vw = T.axis.remap("SS", [tt, w])
                            T.where(vc * TC + tt < L)
                            y[vb, vc * TC + vtt, vdc * W + vw] = y_of(
                                acc[vw], Dv, u, z, mask, vb, vc * TC + vtt, vdc * W + vw)

    func = _prefill_signature(body, Dn, N, dtype, wdtype, adtype, masked)
    name = _names(d_inner, d_state, dtype, wdtype, masked, a_log, tile) + f"_c{chunk}"
    return finish(func, "selective_scan_chunked", f"selective_scan_chunked_{name}")


# ---------------------------------------------------------------------------------------------
# decode: one step
# ---------------------------------------------------------------------------------------------

def selective_state_update(d_inner: int, d_state: int = 16, dtype: str = "float32", *,
                           wdtype: str = "float32", a_log: bool = False,
                           tile: int | None = None, max_tile: int = 64,
                           z_columns: tuple[int, int] | None = None) -> tirx.PrimFunc:
    """One decode step: (state [b, N, D] fp32, x [b, D], dt [b, D], A [N, D], B [b, N], C [b, N],
    D, z [b, D], dt_bias) -> y [b, D]; `state` is updated **in place** (the caller's cache tensor
    advances). delta = softplus(dt + dt_bias); state = exp(delta A) state + (delta x) B;
    y = (state . C + D x) * silu(z). x, dt, z, B, C, y in `dtype`; A as in the prefill scans.
    z_columns = (row width, offset): z is the columns [offset, offset + D) of a wider [b, row
    width] buffer (the in_proj output, read in place instead of sliced out by another kernel)."""
    tile = tile or pick_tile(d_inner, max_tile)
    ZW, ZO = columns_of(z_columns, d_inner, "z_columns")
    _check(d_inner, d_state, dtype, wdtype, tile)
    Dn, N, W = d_inner, d_state, tile
    act, wgt, a_entry, out = _helpers(dtype, wdtype, a_log)
    adtype = wdtype if a_log else "float32"

    @T.prim_func(s_tir=True)
    def update(state_h: T.handle, x_h: T.handle, dt_h: T.handle, A_h: T.handle, B_h: T.handle,
               C_h: T.handle, D_h: T.handle, z_h: T.handle, bias_h: T.handle, y_h: T.handle):
        Bt = T.int64()
        state = T.match_buffer(state_h, (Bt, N, Dn), STATE_DTYPE)
        x = T.match_buffer(x_h, (Bt, Dn), dtype)
        dt = T.match_buffer(dt_h, (Bt, Dn), dtype)
        A = T.match_buffer(A_h, (N, Dn), adtype)
        Bm = T.match_buffer(B_h, (Bt, N), dtype)
        Cm = T.match_buffer(C_h, (Bt, N), dtype)
        Dv = T.match_buffer(D_h, (Dn,), wdtype)
        z = T.match_buffer(z_h, (Bt, ZW), dtype)
        bias = T.match_buffer(bias_h, (Dn,), wdtype)
        y = T.match_buffer(y_h, (Bt, Dn), dtype)
        for b, dc in T.grid(Bt, Dn // W):
            with T.sblock("update"):
                vb, vdc = T.axis.remap("SS", [b, dc])
                Al = T.sblock_alloc_buffer((N, W), "float32", scope="local")
                dx = T.sblock_alloc_buffer((W,), "float32", scope="local")
                dl = T.sblock_alloc_buffer((W,), "float32", scope="local")
                acc = T.sblock_alloc_buffer((W,), "float32", scope="local")
                # A and delta + bias go through float32 locals first: see _step_macros on Lets
                for n, w in T.grid(N, W):
                    with T.sblock("load_A"):
                        vn, vw = T.axis.remap("SS", [n, w])
                        Al[vn, vw] = a_entry(A[vn, vdc * W + vw])
                for w in range(W):
                    with T.sblock("delta_in"):
                        vw = T.axis.remap("S", [w])
                        dx[vw] = act(dt[vb, vdc * W + vw]) + wgt(bias[vdc * W + vw])
                for w in range(W):
                    with T.sblock("delta"):
                        vw = T.axis.remap("S", [w])
                        dl[vw] = softplus_f32(dx[vw])
                for n, w in T.grid(N, W):
                    with T.sblock("step"):
                        vn, vw = T.axis.remap("SS", [n, w])
                        state[vb, vn, vdc * W + vw] = (
                            exp2_nonpos_f32(dl[vw] * Al[vn, vw]) * state[vb, vn, vdc * W + vw]
                            + dl[vw] * act(x[vb, vdc * W + vw]) * act(Bm[vb, vn]))
                for n, w in T.grid(N, W):
                    with T.sblock("dot"):
                        vn, vw = T.axis.remap("RS", [n, w])
                        with T.init():
                            acc[vw] = T.float32(0)
                        acc[vw] = acc[vw] + state[vb, vn, vdc * W + vw] * act(Cm[vb, vn])
                for w in range(W):
                    with T.sblock("out"):
                        vw = T.axis.remap("S", [w])
                        y[vb, vdc * W + vw] = out(
                            (acc[vw] + wgt(Dv[vdc * W + vw]) * act(x[vb, vdc * W + vw]))
                            * silu_f32(act(z[vb, ZO + vdc * W + vw])))

    name = _names(d_inner, d_state, dtype, wdtype, False, a_log, tile)
    cols = f"_z{ZW}o{ZO}" if z_columns is not None else ""
    return finish(update, "selective_state_update", f"selective_state_update_{name}{cols}")


# ---------------------------------------------------------------------------------------------
# x_proj output -> dt_raw, B, C with the inner RMSNorms
# ---------------------------------------------------------------------------------------------

def ssm_input_split(dt_rank: int = 100, d_state: int = 16, dtype: str = "float32",
                    eps: float = 1e-6, norms: bool = True) -> tirx.PrimFunc:
    """s [rows, dt_rank + 2 N] (x_proj output, rows = batch x L, symbolic) ->
    dt_raw [rows, dt_rank], B [rows, N], C [rows, N], contiguous (B and C are the scan's
    [batch, L, N] inputs). With `norms` each part goes through its HymbaRMSNorm (fp32 statistics,
    cast to `dtype`, times the weight in `dtype`): params (s, w_dt, w_B, w_C, dt_raw, B, C);
    without, a plain split: (s, dt_raw, B, C)."""
    check_dtype(dtype)
    rows = seq_var("rows")
    r, N = dt_rank, d_state
    s = te.placeholder((rows, r + 2 * N), dtype, name="s")
    parts = (("dt", 0, r), ("B", r, N), ("C", r + N, N))
    weights = [te.placeholder((width,), dtype, name=f"w_{name}") for name, _, width in parts]
    outs = [_split_part(s, rows, name, off, width, w, dtype, eps, norms)
            for (name, off, width), w in zip(parts, weights)]
    params = [s, *weights, *outs] if norms else [s, *outs]
    func = te.create_prim_func(params)
    return finish(func, "ssm_input_split",
                  f"ssm_input_split_{dt_rank}_{d_state}_{dtype}" + ("_norms" if norms else ""))


def _split_part(s, rows, name, off, width, w, dtype, eps, norms):
    """Columns [off, off + width) of s, through RMSNorm with weight w when `norms`."""
    if not norms:
        return te.compute((rows, width), lambda i, j: s[i, off + j], name=name)
    k = te.reduce_axis((0, width), name=f"k_{name}")
    ss = te.compute((rows,), lambda i: te.sum(f32(s[i, off + k]) * f32(s[i, off + k]), axis=k),
                    name=f"{name}_ss")

    def norm(i, j):
        v = f32(s[i, off + j]) * tirx.rsqrt(ss[i] * _c(1.0 / width) + _c(eps))
        return w[j] * (v if dtype == "float32" else tirx.Cast(dtype, v))

    return te.compute((rows, width), norm, name=name)


EXAMPLES = [
    (selective_scan, (3200, 16, "float32")),
    (selective_scan, (3200, 16, "bfloat16")),
    (selective_scan_chunked, (3200, 16, "float32")),
    (selective_scan_chunked, (3200, 16, "bfloat16")),
    (selective_state_update, (3200, 16, "float32")),
    (selective_state_update, (3200, 16, "bfloat16")),
    (ssm_input_split, (100, 16, "float32")),
    (ssm_input_split, (100, 16, "bfloat16")),
]
