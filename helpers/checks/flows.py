r"""Checkers whose reference is in :mod:`helpers.flows`: lesson 08's affine coupling.

8.9 compares with :func:`helpers.flows.affine_coupling`, with gradients in the input and in the network's
weights.
"""

import torch
from torch import nn

from ..flows import affine_coupling as reference_coupling
from ._core import (
    as_tensor_tuple,
    call_learner,
    checker,
    close,
    diagnose,
    expect_gradient,
    expect_shape,
    fail,
)

_F64 = torch.float64


# ---------------------------------------------------------------- 8.9


class _ShiftScale(nn.Module):
    def __init__(self, L, dtype):
        super().__init__()
        g = torch.Generator().manual_seed(21)
        self.a = nn.Parameter(torch.randn(L, L, generator=g, dtype=dtype) * 0.5)
        self.b = nn.Parameter(torch.randn(L, L, generator=g, dtype=dtype) * 0.5)
        self.seen = []

    def forward(self, kept):
        self.seen.append(kept.detach().clone())
        return kept @ self.a.T + 0.3, torch.tanh(kept @ self.b.T)


@checker("8.9", "an affine coupling step and its log-determinant")
def check_affine_coupling(affine_coupling):
    L = 4
    net = _ShiftScale(L, _F64)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=_F64)
    x = torch.randn(5, L, dtype=_F64, requires_grad=True)
    out = call_learner(affine_coupling, x, mask, net)
    y, log_det = as_tensor_tuple(out, ("y", "log_det"))
    expect_shape(y, (5, L), " for y (the same shape as x)")
    if log_det.shape == (5, L):
        fail("log_det has one value per coordinate; the log-determinant of the step is their sum over the last axis")
    expect_shape(log_det, (5,), " for log_det (one value per row of x)")
    if net.seen and not close(net.seen[0], mask * x.detach(), 1e-12, 1e-12):
        fail(
            "the network must see only the coordinates that pass unchanged, mask * x: otherwise the step cannot "
            "be inverted (its Jacobian is no longer triangular)"
        )
    ref_y, ref_ld = reference_coupling(x, mask, net)
    kept = mask * x
    t, s = net(kept)
    free = 1 - mask
    swapped_y = kept + free * (x * t.exp() + s)  # (s, t) = net(kept): the outputs read in the wrong order
    determinant = "log_det must be the log of |det|, sum (1 - m) s, not the determinant (a product of e^s) itself"
    diagnose(
        torch.cat([y.reshape(-1), log_det]),
        torch.cat([ref_y.reshape(-1), ref_ld]),
        {
            "log_det sums s over every coordinate; only the transformed ones, where mask is 0, contribute: "
            "sum_l (1 - m_l) s_l": torch.cat([ref_y.reshape(-1), s.sum(-1)]),
            "the log-determinant of x -> x e^s + t is + sum (1 - m) s: the sign is off": torch.cat(
                [ref_y.reshape(-1), -ref_ld]
            ),
            determinant: torch.cat([ref_y.reshape(-1), ref_ld.exp()]),
            determinant + " (and only the transformed coordinates, where mask is 0, contribute)": torch.cat(
                [ref_y.reshape(-1), s.exp().prod(-1)]
            ),
            determinant + " (and a product of (1 - m) e^s is 0 wherever mask is 1)": torch.cat(
                [ref_y.reshape(-1), (free * s.exp()).prod(-1)]
            ),
            "log_det sums e^s; the log-determinant sums the logs of the diagonal entries, sum (1 - m) s": torch.cat(
                [ref_y.reshape(-1), (free * s.exp()).sum(-1)]
            ),
            "t and s are swapped: shift_and_log_scale returns (t, s), the shift first, then the log-scale": (
                torch.cat([swapped_y.reshape(-1), (free * t).sum(-1)])
            ),
            "t and s are swapped in y: shift_and_log_scale returns (t, s), the shift first, then the log-scale": (
                torch.cat([swapped_y.reshape(-1), ref_ld])
            ),
            "scale first, then shift: y = x e^s + t on the transformed coordinates, not (x + t) e^s": torch.cat(
                [(kept + free * (x + t) * s.exp()).reshape(-1), ref_ld]
            ),
            "the forward step multiplies by e^s; dividing (e^{-s}) is the inverse step": torch.cat(
                [(kept + free * (x * (-s).exp() + t)).reshape(-1), ref_ld]
            ),
            "the masked coordinates must pass unchanged: y = m x + (1 - m)(x e^s + t)": torch.cat(
                [(x * s.exp() + t).reshape(-1), ref_ld]
            ),
            "the shift t is added to every coordinate, the masked ones too: they must pass unchanged, so t goes "
            "inside the (1 - m) factor with x e^s, y = m x + (1 - m)(x e^s + t)": torch.cat(
                [(kept + free * x * s.exp() + t).reshape(-1), ref_ld]
            ),
            "the shift t is missing: y = x e^s + t on the transformed coordinates": torch.cat(
                [(kept + free * x * s.exp()).reshape(-1), ref_ld]
            ),
            "log_det is the sum over coordinates, not their mean": torch.cat([ref_y.reshape(-1), ref_ld / L]),
        },
        rtol=1e-6,
        atol=1e-9,
    )
    # the flow trains through this step: gradients in x and in the network's weights
    params = [x, net.a, net.b]
    names = ["x", "the shift network's weights", "the scale network's weights"]
    y, log_det = as_tensor_tuple(call_learner(affine_coupling, x, mask, net), ("y", "log_det"))
    ref_y, ref_ld = reference_coupling(x, mask, net)  # after the call: a grader's replay reloads net's weights in place
    expect_gradient(torch.cat([y.reshape(-1), log_det]), params, torch.cat([ref_y.reshape(-1), ref_ld]), names)
    # float32, the lesson's dtype, with the alternate mask
    net32 = _ShiftScale(2, torch.float32)
    mask32 = torch.tensor([0.0, 1.0])
    x32 = torch.randn(256, 2) * 3
    y32, ld32 = as_tensor_tuple(call_learner(affine_coupling, x32, mask32, net32), ("y", "log_det"))
    r_y, r_ld = reference_coupling(x32, mask32, net32)
    if not (close(y32, r_y, 1e-5, 1e-5) and close(ld32, r_ld, 1e-5, 1e-5)):
        fail(
            "right for the mask [1, 0, 1, 0] in float64 but not for the mask [0, 1] in float32: use mask, not fixed "
            "coordinates"
        )
    return "y = m x + (1 - m)(x e^s + t) with log|det| = sum (1 - m) s, and gradients for the flow's training."
