"""hymba_compile.pocl: the CUDA schedule (apply_schedule for cuda:sm_90) lowered to OpenCL and run
on pocl's CPU device, against the reference twins. Small static dims; the whole file runs in
seconds with a warm POCL_CACHE_DIR.

Tolerances (helpers.TOLERANCES): the norms compute the statistics in fp32 in another summation
order (a reduction tree over threads), so fp32 outputs agree to a few ulp and bf16 outputs to one
bf16 ulp, as in test_norm (atol x4: outputs reach a few units). The linears sum fp32 products in
another order: fp32 tolerances with atol scaled by k / 100, as in test_linear."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import tvm

from hymba_compile.opencl_lower import lower_to_opencl
from hymba_compile.pocl import PoclKernel, build_pocl_kernel, pocl_unavailable_reason
from hymba_compile.reference import add_rms_norm, causal_conv1d_step, linear, rms_norm
from hymba_compile.reference import ssm_input_split as split_ref
from hymba_compile.ir.conv import causal_conv1d_step as conv_step
from hymba_compile.ir.linear import gemv, matmul
from hymba_compile.ir.norm import add_rmsnorm, rmsnorm
from hymba_compile.ir.scan import ssm_input_split
from hymba_compile.schedules import apply_schedule, named_target
from tests.kernels.helpers import TORCH_DTYPES, assert_close

pytestmark = pytest.mark.skipif(pocl_unavailable_reason() is not None,
                                reason=str(pocl_unavailable_reason()))
CUDA = "cuda:sm_90"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rmsnorm(dtype):
    kernel = build_pocl_kernel(rmsnorm(64, dtype), CUDA)
    assert "__kernel" in kernel.source
    g = torch.Generator().manual_seed(0)
    for rows in (1, 7):  # one build serves every row count (n is symbolic)
        x = (torch.randn(rows, 64, generator=g) * 3).to(TORCH_DTYPES[dtype])
        w = torch.randn(64, generator=g).to(TORCH_DTYPES[dtype])
        y = torch.full_like(x, float("nan"))
        kernel(x, w, y)
        assert_close(y, rms_norm(x, w, 1e-6), dtype, scale=4.0)
        ((symbol, grid, block),) = kernel.launches
        assert symbol.startswith("rmsnorm_64") and grid[0] * block[0] >= rows


@pytest.mark.parametrize("builder,args,rows", [
    (gemv, (2, 37, 100, "float32"), 2), (gemv, (1, 64, 128, "bfloat16"), 1),
    (matmul, (37, 100, "float32"), 17), (matmul, (16, 64, "bfloat16"), 5)])
def test_linear(builder, args, rows):
    n, k, dtype = args[-3:]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(rows, k, generator=g)
    w = (torch.randn(n, k, generator=g) * k ** -0.5).to(TORCH_DTYPES[dtype])
    y = torch.full((rows, n), float("nan"))
    build_pocl_kernel(builder(*args), CUDA)(x, w, y)
    assert_close(y, linear(x, w), "float32", scale=max(1.0, k / 100))


@pytest.mark.parametrize("variant", ["dlight", "row_block"])
def test_add_rmsnorm_launches(variant):
    """dlight: three launches with a host-allocated scratch buffer (the sums of squares) between
    them; row_block (the default): one launch, the sums in shared memory."""
    kernel = build_pocl_kernel(add_rmsnorm(64, "float32"), CUDA, variant)
    if variant == "dlight":
        assert len(kernel.program.launches) >= 2 and kernel.program.scratch
    else:
        assert len(kernel.program.launches) == 1 and not kernel.program.scratch
    g = torch.Generator().manual_seed(2)
    x, r = torch.randn(2, 9, 64, generator=g)
    w = torch.randn(64, generator=g)
    h, y = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
    kernel(x, r, w, h, y)
    h_ref, y_ref = add_rms_norm(x, r, w, 1e-6)
    assert torch.equal(h, h_ref)
    assert_close(y, y_ref, "float32", scale=4.0)
    assert len(kernel.launches) == len(kernel.program.launches)


def test_ssm_input_split_bf16():
    kernel = build_pocl_kernel(ssm_input_split(20, 8, "bfloat16"), CUDA)
    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 36, generator=g).to(torch.bfloat16)
    ws = [torch.randn(k, generator=g).to(torch.bfloat16) for k in (20, 8, 8)]
    outs = [torch.empty(6, k, dtype=torch.bfloat16) for k in (20, 8, 8)]
    kernel(s, *ws, *outs)
    for out, ref in zip(outs, split_ref(s, 20, 8, *ws, 1e-6)):
        assert_close(out, ref, "bfloat16", scale=4.0)


def test_in_place_state_update():
    """causal_conv1d_step advances its `state` input in place: the runner copies it back."""
    kernel = build_pocl_kernel(conv_step(32, 4, "float32"), CUDA)
    assert [p.name for p in kernel.program.params if p.written] == ["state", "y"]
    g = torch.Generator().manual_seed(5)
    state_ref, x = torch.randn(2, 32, 4, generator=g), torch.randn(2, 32, generator=g)
    w_ref, bias = torch.randn(32, 1, 4, generator=g) * 0.7, torch.randn(32, generator=g)
    y_ref, new_state_ref = causal_conv1d_step(state_ref, x, w_ref, bias)
    state = state_ref.transpose(1, 2).contiguous()  # ours [b, K, C]
    y = torch.empty_like(x)
    kernel(state, x, w_ref[:, 0, :].t().contiguous(), bias, y)
    assert_close(y, y_ref, "float32", scale=4.0)
    assert torch.equal(state, new_state_ref.transpose(1, 2))


def test_shape_and_dtype_mismatch_raise():
    kernel = build_pocl_kernel(rmsnorm(64, "float32"), CUDA)
    x, w = torch.randn(5, 64), torch.randn(64)
    with pytest.raises(ValueError, match=r"'y' dim 0 .*n = 5.*\(4, 64\)"):
        kernel(x, w, torch.empty(4, 64))
    with pytest.raises(ValueError, match=r"'w' dim 0"):
        kernel(x, torch.randn(65), torch.empty(5, 64))
    with pytest.raises(TypeError, match=r"'w' is float32"):
        kernel(x, w.double(), torch.empty(5, 64))
    with pytest.raises(TypeError, match="takes 3 arguments"):
        kernel(x, w)


def test_shared_dyn_is_rewritten():
    """A schedule whose shared buffers are "shared.dyn" (which TVM's OpenCL codegen would turn
    into private arrays) still computes the right numbers."""
    mod = apply_schedule(matmul(16, 64, "float32"), named_target(CUDA))
    text = mod.script()
    assert 'scope="shared"' in text
    mod = tvm.script.from_source(text.replace('scope="shared"', 'scope="shared.dyn"'))
    kernel = PoclKernel(lower_to_opencl(mod), CUDA, "shared.dyn")
    assert "__local" in kernel.source
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(9, 64, generator=g), torch.randn(16, 64, generator=g) / 8
    y = torch.full((9, 16), float("nan"))
    kernel(x, w, y)
    assert_close(y, linear(x, w), "float32")


@pytest.mark.skipif(pocl_unavailable_reason("oclgrind") is not None,
                    reason=str(pocl_unavailable_reason("oclgrind")))
def test_oclgrind_reports_a_race():
    """Clean on the real schedule; deleting the barriers gives Oclgrind's race report."""
    func = rmsnorm(16, "float32")
    x, w = torch.randn(2, 16), torch.randn(16)
    y = torch.empty_like(x)
    kernel = build_pocl_kernel(func, CUDA, platform="oclgrind")
    kernel(x, w, y)
    assert kernel.diagnostics.strip() == ""
    assert_close(y, rms_norm(x, w, 1e-6), "float32", scale=4.0)
    racy = dataclasses.replace(kernel.program, source=re.sub(
        r"barrier\(CLK_LOCAL_MEM_FENCE\);", "", kernel.program.source))
    bad = PoclKernel(racy, CUDA, "no-barriers", platform="oclgrind")
    bad(x, w, y)
    assert "data race" in bad.diagnostics
