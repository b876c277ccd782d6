r"""SIVI, UIVI, SIVI-SM, kernel SIVI and a RealNVP flow, each fitted to a 2-D target as its authors fit it.

One function per method trains a fresh family on an unnormalised ``log_target`` for ``steps`` updates.
The settings are those of each method's public code for its 2-D experiments; where they differ from the
authors', it is said here and in lesson 08. Learning-rate decays come at the authors' own intervals, counted
in updates (every 1000, or 3000 for UIVI), whatever ``steps`` is: a run of 5000 updates is the first tenth of
the authors' 50 000, its learning rate still at :math:`0.9^5 = 59\%` (UIVI: 90 %) of its start at the end.
The annealing warm-up is defined by the authors as a fraction of the run (``warm_ratio: 2``): half of it.

- **SIVI** (Yin & Zhou 2018, ``SIVI_2d.py``): 10-D noise, ReLU 40-60-40 (``slim.fully_connected``'s default
  activation), :math:`\sigma = 0.1` fixed, 40 draws of :math:`z` and 100 extra draws of :math:`\psi` a
  step, Adam at :math:`10^{-3}\cdot 0.75^{t/100}`, 5000 steps: our ``steps = 5000`` is theirs.
- **UIVI** (Titsias & Ruiz 2019, ``src/main_demo.m``): 3-D noise, ReLU 50-50, :math:`\sigma` itself learned
  from 0.5 and floored at :math:`10^{-5}`; HMC on :math:`q(\varepsilon\mid z)` from the generating
  :math:`\varepsilon`, 5 burn-in and 5 kept iterations of 5 leapfrog steps, the step size adapted towards an
  acceptance rate of 0.7 and carried over; their RMSProp (:class:`TitsiasRMSprop`: :math:`\kappa = 0.1`,
  :math:`\tau = 1`, the average started at the first squared gradient), learning rates 0.01 (network) and
  0.002 (:math:`\sigma`), times 0.9 every 3000 updates. They draw one :math:`z` a step for 50 000 steps;
  a run of ``steps`` draws ``50000 / steps`` of them (10 in 5000 updates), so the number of draws is theirs.
  Their HMC adapts the step within each burn-in; ours once a step.
- **SIVI-SM** (Yu & Zhang 2023, ``sivism_2d.py``): 3-D noise, ReLU 50-50, :math:`\log\sigma^2` learned from
  0; :math:`f`: ReLU 128-128; one family step then one :math:`f` step, each on 500 fresh draws; Adam
  (0.9, 0.99) at :math:`10^{-3}` (family) and :math:`2\cdot10^{-3}` (:math:`f`), times 0.9 every 1000
  updates; on the two-mode target the target's score is annealed by :math:`\min(1, 0.1 + t/T_w)`,
  :math:`T_w` half the run (their ``utils/annealing.py`` with ``warm_ratio: 2``).
- **KSIVI** (Cheng et al. 2024, ``sivistein_2d.py`` and ``configs/``): the same family, :math:`\log\sigma^2`
  learned from :math:`\log 0.25` (banana) or 0; the Gaussian kernel with the median bandwidth, which their
  2-D configs differentiate through (``detach: False``), except on the two-mode target: the IMQ kernel (its
  bandwidth detached, as their ``utils/kernels.py``) and the annealed score, over half the run; their
  ``annealing.py`` is not in the copy of their repository we read, so the schedule is SIVI-SM's (a copy of
  the function published elsewhere starts at 0 instead of 0.1); Adam (0.9, 0.99) at :math:`10^{-3}`, times
  0.9 every 1000 updates, 500 draws a step. Their estimator pairs two independent batches of 500; ours is
  the U-statistic of one batch of 500 (also unbiased). Not ported: their floor of -20 on :math:`\log\sigma^2`.
- **RealNVP**: no authors for these targets; 8 affine couplings with ``tanh`` MLPs of 64 units, the
  ELBO with 500 draws a step, Adam at :math:`10^{-3}` times 0.9 every 1000 updates, no annealing.

Three of these settings were chosen by their authors on another banana than the course's:
:math:`(z_1, z_1^2 + z_2 + 1)\sim\mathcal N(0, [[1, .9], [.9, 1]])` (UIVI's, SIVI-SM's and KSIVI's); the
course's banana is ``helpers.targets.banana``.

``problem="logistic regression"`` (lesson 06's 31-D posterior, ``L = 31``) takes each method's settings for
Bayesian logistic regression where its authors published them:

- **SIVI**: the SIVI paper's family of lesson 06 (20-D noise, ReLU 100-200-100, a full-covariance conditional
  with a learned Cholesky factor, :math:`\sigma` from 0.1), 50 draws of :math:`z` and 100 of :math:`\psi`,
  Adam at :math:`0.01\cdot 0.9^{t/100}`, as lesson 06 runs it.
- **SIVI-SM** (``sivism_lr.py``, ``configs/LRwaveform.yml``) and **KSIVI** (``sivistein_lr.py``, its
  ``LRwaveform.yml``): 10-D noise, ReLU 100-100, a diagonal conditional whose :math:`\log\sigma^2` starts at
  0 (SIVI-SM) or -5 (KSIVI); 100 draws a step; Adam (0.9, 0.99) at :math:`10^{-3}` (SIVI-SM's :math:`f`,
  ReLU 256-256, at :math:`3\cdot10^{-3}`), times 0.9 every 3000 updates (of their 20 000); the RBF kernel
  with the median bandwidth, differentiated through; no annealing; SIVI-SM's "TransTrick": its critic is
  :math:`f(z) + c_t\,s_p(z)`, with :math:`c_t = 1.004^{-e}` in epoch :math:`e` of 200. Not ported: both
  codes' floor on the log-variance.
- **UIVI** has no regression experiment; it gets SIVI-SM's family (:math:`\sigma` from 1) and 100 draws a
  step, and keeps its own optimiser, parameterisation and HMC settings (above), its decays every 3000
  updates as the others'; with ``optimizer="adam"``, SIVI-SM's and KSIVI's Adam instead.
- **RealNVP**: 8 couplings of 64 units in 31 dimensions, 100 draws a step, Adam at :math:`10^{-3}` times 0.9
  every 3000 updates.

References
----------
Yin, M. & Zhou, M. Semi-implicit variational inference. ICML (2018).
Titsias, M. K. & Ruiz, F. J. R. Unbiased implicit variational inference. AISTATS (2019).
Yu, L. & Zhang, C. Semi-implicit variational inference via score matching. ICLR (2023).
Cheng, Z., Yu, L., Xie, T., Zhang, S. & Zhang, C. Kernel semi-implicit variational inference. ICML (2024).
Dinh, L., Sohl-Dickstein, J. & Bengio, S. Density estimation using Real NVP. ICLR (2017).
"""

import csv
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils import parametrize
from tqdm.auto import trange

from .estimators import standard_error
from .flows import RealNVP
from .kernel_stein import imq_bandwidth, imq_kernel, ksd_u_statistic, ksivi_loss, median_bandwidth, rbf_kernel
from .score_matching import score_network, sivism_step
from .semi_implicit import SemiImplicitGaussian, log_density_estimate, sivi_bound
from .uivi import uivi_surrogate

__all__ = [
    "Fit",
    "METHODS",
    "TitsiasRMSprop",
    "fit",
    "annealed",
    "uivi_batch",
    "mode_weight",
    "read_study",
    "mean_and_se",
    "STUDY_CSV",
    "TIMING_CSV",
    "LOGISTIC_CSV",
]

AUTHORS_STEPS = 50_000  # UIVI's, SIVI-SM's and KSIVI's 2-D runs
PROBLEMS = ("2-D", "logistic regression")
REGRESSION_DECAY = 3000  # SIVI-SM's and KSIVI's logistic-regression runs decay every 3000 of their 20 000 updates


@dataclass
class Fit:
    """A trained family: ``sample(n) -> (n, L)``, ``log_density(points (n, L)) -> (n,)`` and the training time."""

    method: str
    family: torch.nn.Module
    seconds: float

    @torch.no_grad()
    def sample(self, n):
        if isinstance(self.family, RealNVP):
            return self.family.rsample_with_log_prob(n)[0]
        return self.family.rsample(n)[0]

    @torch.no_grad()
    def log_density(self, points, K=20_000):
        """Exact for the flow; for a semi-implicit family, the average of ``K`` conditionals (consistent)."""
        if isinstance(self.family, RealNVP):
            return self.family.log_prob(points)
        return log_density_estimate(self.family, points, K, chunk=256)


def annealed(log_target, factor):
    r""":math:`\beta\log p`: its score is :math:`\beta s_p`, the authors' annealed score."""
    return log_target if factor >= 1 else (lambda z: factor * log_target(z))


def _anneal_factor(t, steps, anneal):
    return min(1.0, 0.1 + t / (steps / 2)) if anneal else 1.0


def _decay_every(authors_every, problem="2-D"):
    """The authors' decay interval in updates (the regression runs': every 3000), whatever the run's length."""
    return authors_every if problem == "2-D" else REGRESSION_DECAY


class _HalfOf(torch.nn.Module):
    r""":math:`\log\sigma = \tfrac12\log\sigma^2`: the family's ``log_sigma`` computed from a learned log-variance."""

    def forward(self, log_variance):
        return log_variance / 2

    def right_inverse(self, log_sigma):
        return 2 * log_sigma


class _LogOf(torch.nn.Module):
    r""":math:`\log\sigma` computed from a learned :math:`\sigma` itself."""

    def forward(self, sigma):
        return sigma.log()

    def right_inverse(self, log_sigma):
        return log_sigma.exp()


def _learn_sigma_as(q, parameterisation):
    r"""Make ``q`` learn :math:`\log\sigma^2` (``_HalfOf``) or :math:`\sigma` (``_LogOf``) instead of
    :math:`\log\sigma`, as its authors do (``torch.nn.utils.parametrize``: the family still reads
    ``q.log_sigma``; the optimiser steps the new parameter). Returns the new parameter."""
    parametrize.register_parametrization(q, "log_sigma", parameterisation)
    return q.parametrizations.log_sigma.original


class TitsiasRMSprop(torch.optim.Optimizer):
    r"""UIVI's RMSProp (Titsias & Ruiz 2019, ``src/main_demo.m``), as a minimiser:

    .. math::
        G_t = \kappa\,g_t^2 + (1-\kappa)\,G_{t-1},\qquad \theta_t = \theta_{t-1} - \rho\,g_t / (\tau + \sqrt{G_t}),

    with :math:`\kappa = 1` at the first step (so :math:`G_1 = g_1^2`, where ``torch.optim.RMSprop`` starts
    the average at 0). ``kappa = 0.1``, ``tau = 1`` are the authors'; ``lr`` is each group's default.
    """

    def __init__(self, params, lr=0.01, kappa=0.1, tau=1.0):
        if not (lr > 0 and 0 < kappa <= 1 and tau > 0):
            raise ValueError(f"need lr > 0, 0 < kappa <= 1 and tau > 0, got {lr}, {kappa}, {tau}")
        super().__init__(params, {"lr": lr, "kappa": kappa, "tau": tau})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "G" in state:
                    state["G"].mul_(1 - group["kappa"]).addcmul_(p.grad, p.grad, value=group["kappa"])
                else:
                    state["G"] = p.grad**2
                p.addcdiv_(p.grad, state["G"].sqrt().add_(group["tau"]), value=-group["lr"])


def _regression_family(L, sigma, noise_dim=None):
    """SIVI-SM's and KSIVI's logistic-regression family: 10-D noise (or ``noise_dim``), ReLU 100-100, a diagonal."""
    return SemiImplicitGaussian.mlp(L=L, noise_dim=noise_dim or 10, hidden=(100, 100), sigma=sigma, learn_sigma=True)


def _fit_sivi(log_target, steps, L=2, problem="2-D", **_):
    if problem == "2-D":
        q = SemiImplicitGaussian.mlp(L=L, noise_dim=10, hidden=(40, 60, 40), sigma=0.1)
        opt = torch.optim.Adam(q.parameters(), lr=1e-3)
        decay, J, K = 0.75, 40, 100
    else:  # the SIVI paper's logistic-regression family (lesson 06)
        q = SemiImplicitGaussian.mlp(
            L=L, noise_dim=20, hidden=(100, 200, 100), sigma=0.1, learn_sigma=True, full_covariance=True
        )
        opt = torch.optim.Adam(q.parameters(), lr=0.01)
        decay, J, K = 0.9, 50, 100
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: decay ** (t / 100))

    def step(t):
        opt.zero_grad()
        (-sivi_bound(log_target, q, J, K)).backward()
        opt.step()
        sched.step()

    return q, step


def uivi_batch(steps):
    """UIVI's draws of ``z`` a step in a run of ``steps``: the authors' 50 000 in all (one a step), at most 500."""
    return min(500, max(1, round(AUTHORS_STEPS / steps)))


def _fit_uivi(log_target, steps, batch=None, L=2, problem="2-D", optimizer="rmsprop", noise_dim=None, **_):
    if problem == "2-D":
        q = SemiImplicitGaussian.mlp(L=L, noise_dim=3, hidden=(50, 50), sigma=0.5, learn_sigma=True)
    else:
        q = _regression_family(L, sigma=1.0, noise_dim=noise_dim)
    sigma = _learn_sigma_as(q, _LogOf())  # the authors learn sigma itself
    net = [p for name, p in q.named_parameters() if not name.startswith("parametrizations.")]
    if optimizer == "adam":  # SIVI-SM's and KSIVI's optimiser, for a method whose authors give none here
        opt = torch.optim.Adam(q.parameters(), lr=1e-3, betas=(0.9, 0.99))
    else:
        opt = TitsiasRMSprop([{"params": net, "lr": 0.01}, {"params": [sigma], "lr": 0.002}])
    sched = torch.optim.lr_scheduler.StepLR(opt, _decay_every(3000, problem), gamma=0.9)
    S = batch or (uivi_batch(steps) if problem == "2-D" else 100)
    hmc_step = 0.2

    def step(t):
        nonlocal hmc_step
        stats = {}
        opt.zero_grad()
        (-uivi_surrogate(log_target, q, S, step_size=hmc_step, stats=stats)).backward()
        opt.step()
        with torch.no_grad():
            sigma.clamp_(min=1e-5)  # the authors' floor
        sched.step()
        hmc_step *= 1 + 0.01 * 5 * (stats["acceptance"] - 0.7) / 0.7  # five burn-in adaptations at once

    return q, step


def _with_target_score(f, log_target, c):
    r"""SIVI-SM's "TransTrick" (``sivism_lr.py``): the critic is :math:`f(z) + c\,s_p(z)`, so that ``f`` learns
    only the rest of :math:`s_p - s_q`; the authors start ``c`` at 1 and divide it by 1.004 every epoch."""

    def critic(z):
        (score,) = torch.autograd.grad(log_target(z).sum(), z, create_graph=True)
        return f(z) + c * score

    return critic


def _fit_sivism(log_target, steps, anneal=False, L=2, problem="2-D", trans_trick=None, noise_dim=None, **_):
    if problem == "2-D":
        q = SemiImplicitGaussian.mlp(L=L, noise_dim=3, hidden=(50, 50), sigma=1.0, learn_sigma=True)
        f, lr_f, S = score_network(L, (128, 128)), 2e-3, 500
    else:
        q, f, lr_f, S = _regression_family(L, 1.0, noise_dim), score_network(L, (256, 256)), 3e-3, 100
    _learn_sigma_as(q, _HalfOf())  # the authors learn log sigma^2
    opt_q = torch.optim.Adam(q.parameters(), lr=1e-3, betas=(0.9, 0.99))
    opt_f = torch.optim.Adam(f.parameters(), lr=lr_f, betas=(0.9, 0.99))
    every = _decay_every(1000, problem)
    scheds = [torch.optim.lr_scheduler.StepLR(o, every, gamma=0.9) for o in (opt_q, opt_f)]

    def step(t):
        log_p = annealed(log_target, _anneal_factor(t, steps, anneal))
        critic = f
        if trans_trick if trans_trick is not None else problem != "2-D":  # c = 1.004^-epoch, 200 epochs a run
            critic = _with_target_score(f, log_p, 1.004 ** -math.floor(200 * t / steps))
        sivism_step(log_p, q, critic, opt_q, opt_f, S)
        for s in scheds:
            s.step()

    return q, step


def _fit_ksivi(
    log_target,
    steps,
    anneal=False,
    kernel="rbf",
    sigma=1.0,
    L=2,
    problem="2-D",
    attached_bandwidth=True,
    noise_dim=None,
    **_,
):
    if problem == "2-D":
        q, S = SemiImplicitGaussian.mlp(L=L, noise_dim=3, hidden=(50, 50), sigma=sigma, learn_sigma=True), 500
    else:
        q, S = _regression_family(L, math.exp(-5 / 2), noise_dim), 100  # their log-variance starts at -5
    _learn_sigma_as(q, _HalfOf())  # the authors learn log sigma^2
    opt = torch.optim.Adam(q.parameters(), lr=1e-3, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.StepLR(opt, _decay_every(1000, problem), gamma=0.9)
    k, bandwidth = (imq_kernel, imq_bandwidth) if kernel == "imq" else (rbf_kernel, median_bandwidth)
    if kernel != "imq" and attached_bandwidth:  # their configs' detach: False (IMQ's bandwidth is detached)
        bandwidth = functools.partial(median_bandwidth, detach=False)
    ksd = functools.partial(ksd_u_statistic, kernel=k)

    def step(t):
        log_p = annealed(log_target, _anneal_factor(t, steps, anneal))
        opt.zero_grad()
        ksivi_loss(log_p, q, S, bandwidth=bandwidth, ksd=ksd).backward()
        opt.step()
        sched.step()

    return q, step


def _fit_flow(log_target, steps, L=2, problem="2-D", **_):
    q = RealNVP(L=L, n_layers=8, hidden=64)
    opt = torch.optim.Adam(q.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, _decay_every(1000, problem), gamma=0.9)
    S = 500 if problem == "2-D" else 100

    def step(t):
        opt.zero_grad()
        z, log_q = q.rsample_with_log_prob(S)
        loss = -(log_target(z) - log_q).mean()  # loss = -elbo
        loss.backward()
        opt.step()
        sched.step()

    return q, step


METHODS = {
    "SIVI": _fit_sivi,
    "UIVI": _fit_uivi,
    "SIVI-SM": _fit_sivism,
    "KSIVI": _fit_ksivi,
    "RealNVP": _fit_flow,
}


def fit(method, log_target, steps, seed, desc=None, checkpoint=None, **options):
    """Train ``method`` (a key of :data:`METHODS`) on ``log_target`` for ``steps`` updates from ``seed``.

    ``options``: ``problem``, ``"2-D"`` (default, ``L = 2``) or ``"logistic regression"`` (lesson 06's
    posterior, ``L = 31``: the module's docstring says what changes); ``anneal`` (SIVI-SM, KSIVI), ``kernel``
    in ``{"rbf", "imq"}`` and ``sigma`` (KSIVI's initial conditional scale, 2-D), ``batch`` (UIVI's draws a
    step; by default ``50000 / steps``, at most 500, in 2-D and 100 on the regression) and ``optimizer``
    (UIVI's: ``"rmsprop"``, the authors', or ``"adam"``); ``trans_trick`` (SIVI-SM, by default true on the
    regression only, as the authors' regression code) and ``attached_bandwidth`` (KSIVI's RBF kernel, by
    default true, as the authors' code); ``noise_dim`` (the regression family's noise dimension for UIVI,
    SIVI-SM and KSIVI, 10 by default, as the authors'). ``checkpoint``, a pair ``(t, callback)``, calls
    ``callback(Fit)`` after update ``t`` (to see whether training has reached its plateau); its time is not
    counted. ``Fit.seconds`` is the updates' CPU time (``time.process_time``: with one torch thread, the
    compute they took, even on a shared machine). A progress bar is shown when ``desc`` is given. Returns a
    :class:`Fit`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if not (isinstance(steps, int) and steps > 0):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    problem = options.pop("problem", "2-D")
    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem {problem!r}; choose one of {PROBLEMS}")
    torch.manual_seed(seed)
    family, step = METHODS[method](log_target, steps, L=2 if problem == "2-D" else 31, problem=problem, **options)
    seconds = 0.0
    for t in trange(steps, desc=desc, leave=False, disable=desc is None):
        start = time.process_time()  # CPU seconds: what the update costs, whatever else shares the machine
        step(t)
        seconds += time.process_time() - start
        if checkpoint is not None and t + 1 == checkpoint[0]:
            checkpoint[1](Fit(method, family, seconds))
    return Fit(method, family, seconds)


def mode_weight(samples):
    """The fraction of draws with :math:`z_1 > 0`: the weight a fit gives the right mode of the mixture."""
    return float((samples[:, 0] > 0).double().mean())


STUDY_CSV = Path(__file__).parent / "data" / "successors_2d.csv"  # python -m benchmarks.successors writes both
TIMING_CSV = STUDY_CSV.with_name("successors_2d_timing.csv")
LOGISTIC_CSV = STUDY_CSV.with_name("successors_logistic.csv")  # python -m benchmarks.successors_logistic


def read_study(path=STUDY_CSV):
    """A comparison study's rows (``python -m benchmarks.successors`` or ``.successors_logistic`` writes them).

    Returns a dict ``(target, method) -> {column: list of per-seed floats}`` (``method -> ...`` for a file
    without a ``target`` column, such as :data:`LOGISTIC_CSV`), in the file's order; empty cells are NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m benchmarks.successors` to produce it")
    table = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["target"], row["method"]) if "target" in row else row["method"]
            entry = table.setdefault(key, {})
            for column, value in row.items():
                if column not in ("target", "method"):
                    entry.setdefault(column, []).append(float(value) if value != "" else math.nan)
    return table


def mean_and_se(values):
    """Mean and standard error over seeds (``sd / sqrt(n)``, with ``n - 1`` in the sd); ``(mean, nan)`` for one."""
    mean = sum(values) / len(values)
    return mean, (float(standard_error(values)) if len(values) > 1 else math.nan)
