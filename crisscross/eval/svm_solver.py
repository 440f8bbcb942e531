"""scikit-learn's ``LinearSVC`` objective, solved in torch for a whole C sweep (CPU or GPU).

The objective is LinearSVC's defaults exactly: one-vs-rest, squared hinge, L2 penalty, the
intercept a regularised weight of a constant feature 1 (``intercept_scaling=1``), on features
standardised as ``StandardScaler`` does. For each class k (columns solved side by side)::

    min_w  1/2 |w|^2 + C * sum_i max(0, 1 - y_ik <w, x_i>)^2        y_ik = +1 if i is of class k, else -1

Why not liblinear: it solves the classes one after the other on one core in float64, and at the
sweep's large C its solvers crawl (issue 15: 18 minutes of sweep for 8 minutes of extraction).
Here, once per sweep, the standardised features are rotated onto the eigenvectors of their
second-moment matrix (an orthogonal change of basis: |w| and every <w, x_i> are unchanged, so the
optimum is the same). In that basis the Hessian of the objective is diagonal when every row is
inside the margin and close to diagonal otherwise, so a truncated Newton method whose conjugate
gradients are preconditioned by the Hessian's diagonal converges in few matrix products; all
classes share each product (one matmul per step), and every C starts from the best of the previous
C's solution and the closed-form all-rows-active solution. A class stops when a Newton step lowers
its objective by less than ``rtol`` of it.

When there are fewer rows than features the rotation uses the rows' Gram matrix instead, and the
problem lives in the rows' span (n dimensions): the representer theorem says the optimum is there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

RTOL = 1e-3             # stop a class when a Newton step lowers its objective by less than this share
CG_TOL = 0.1            # inner solve: |residual| <= CG_TOL |gradient| (liblinear's choice)
MAX_NEWTON = 30
MAX_CG = 50
EIG_FLOOR = 1e-9        # Gram eigenvalues below this share of the largest carry no data (dropped)
ROW_CHUNK = 16384       # rows per chunk where a full-size temporary would double the memory


@dataclass
class LinearSVM:
    """A fitted one-vs-rest linear SVM: ``scores = standardise(x) @ weight[:-1] + weight[-1]``.

    ``classes`` are the class indices of the columns; a binary problem has one column (scores of
    ``classes[1]``; ``classes[0]`` gets their negation), as LinearSVC has.
    """

    mean: torch.Tensor              # [d]
    scale: torch.Tensor             # [d]
    weight: torch.Tensor            # [d + 1, columns]
    classes: np.ndarray             # [num classes seen in training]

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Scores [n, len(classes)] of the rows of ``x``."""
        xs = (torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).to(self.weight.device)
              - self.mean) / self.scale
        scores = (xs @ self.weight[:-1] + self.weight[-1]).cpu().numpy()
        return np.concatenate([-scores, scores], axis=1) if len(self.classes) == 2 else scores


class SVMProblem:
    """Training features standardised, with the constant 1 appended, and rotated (see the module
    docstring); fits a :class:`LinearSVM` on any subset of the rows for any C."""

    def __init__(self, features: np.ndarray, device: str | torch.device = "cpu") -> None:
        x = torch.as_tensor(np.ascontiguousarray(features), dtype=torch.float32).to(device)
        self.mean, self.scale = _moments(x)
        x = _standardise(x, self.mean, self.scale)
        self.rows, self.basis = _rotate(x)               # rows [n, r], basis [d + 1, r]
        self.device = x.device

    def subset(self, rows: np.ndarray) -> "SVMProblem":
        """The same standardisation and basis on some of the rows (one copy of them)."""
        part = object.__new__(SVMProblem)
        part.mean, part.scale, part.basis, part.device = self.mean, self.scale, self.basis, self.device
        part.rows = self.rows[torch.as_tensor(rows, device=self.device)]
        return part

    def targets(self, labels: np.ndarray, classes: np.ndarray) -> torch.Tensor:
        """+-1 targets [n, columns] (one column for two classes)."""
        y = torch.as_tensor(labels, device=self.device)
        cols = torch.as_tensor(classes[1:] if len(classes) == 2 else classes, device=self.device)
        return torch.where(y[:, None] == cols[None, :], 1.0, -1.0)

    def fit(self, labels: np.ndarray, C: float, start: torch.Tensor | None = None,
            stats: dict | None = None) -> tuple[LinearSVM, torch.Tensor]:
        """The SVM of C with class indices ``labels`` (one per row). Returns it and its rotated
        weights (a warm start for the next C)."""
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError("an SVM needs at least two classes in its training rows")
        w = newton_cg(self.rows, self.targets(labels, classes), C, start, stats=stats)
        return LinearSVM(self.mean, self.scale, self.basis @ w, classes), w


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation (1 where constant, as StandardScaler), in float64 sums."""
    mean = x.sum(0, dtype=torch.float64) / len(x)
    var = torch.zeros_like(mean)
    for i in range(0, len(x), ROW_CHUNK):
        var += (x[i:i + ROW_CHUNK].double() - mean).square().sum(0)
    scale = (var / len(x)).sqrt()
    return mean.float(), torch.where(scale > 0, scale, torch.ones_like(scale)).float()


def _standardise(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    out = torch.empty((x.shape[0], x.shape[1] + 1), dtype=torch.float32, device=x.device)
    torch.sub(x, mean, out=out[:, :-1]).div_(scale)
    out[:, -1] = 1.0
    return out


def _rotate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x @ basis, basis): rows whose columns are orthogonal (x'^T x' diagonal), basis orthonormal."""
    n, d = x.shape
    if n >= d:
        _, v = torch.linalg.eigh((x.T @ x).double())
        v = v.float()
        for i in range(0, n, ROW_CHUNK):            # in place: no second copy of the features
            x[i:i + ROW_CHUNK] = x[i:i + ROW_CHUNK] @ v
        return x, v
    lam, u = torch.linalg.eigh((x @ x.T).double())
    keep = lam > lam.max() * EIG_FLOOR
    s, u = lam[keep].sqrt(), u[:, keep]
    return (u * s).float(), (x.T.double() @ (u / s)).float()


def _objective(w: torch.Tensor, z: torch.Tensor, y: torch.Tensor, C: float) -> torch.Tensor:
    """Per-column objective from the weights and the scores ``z = x @ w``."""
    return 0.5 * w.square().sum(0) + C * (1 - y * z).clamp_min(0).square().sum(0)


def _squares_t(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """(x * x)^T @ a without an n x r temporary of squares."""
    out = torch.zeros(x.shape[1], a.shape[1], dtype=x.dtype, device=x.device)
    for i in range(0, len(x), ROW_CHUNK):
        out += x[i:i + ROW_CHUNK].square().T @ a[i:i + ROW_CHUNK]
    return out


def newton_cg(x: torch.Tensor, y: torch.Tensor, C: float, start: torch.Tensor | None = None,
              rtol: float = RTOL, stats: dict | None = None) -> torch.Tensor:
    """Weights [r, columns] minimising the objective for rotated rows ``x`` [n, r] and targets ``y``.

    ``stats`` (a dict), when given, gets the Newton iterations and the matrix products used.
    """
    products = 0

    def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        nonlocal products
        products += 1
        return a @ b

    # Closed form when every row is inside the margin (the diagonal system of the rotated basis).
    w = 2 * C * matmul(x.T, y) / (1 + 2 * C * x.square().sum(0))[:, None]
    z = matmul(x, w)
    f = _objective(w, z, y, C)
    if start is not None:
        z0 = matmul(x, start)
        f0 = _objective(start, z0, y, C)
        better = f0 < f
        w, z, f = torch.where(better, start, w), torch.where(better, z0, z), torch.where(better, f0, f)
    todo = torch.arange(y.shape[1], device=x.device)
    for it in range(MAX_NEWTON):
        wt, zt, yt = w[:, todo], z[:, todo], y[:, todo]
        margin = (1 - yt * zt).clamp_min(0)
        g = wt - 2 * C * matmul(x.T, yt * margin)
        active = (margin > 0).to(x.dtype)
        diag = 1 + 2 * C * _squares_t(x, active)
        step = _conjugate_gradients(lambda p: p + 2 * C * matmul(x.T, active * matmul(x, p)), g, diag)
        xs = matmul(x, step)
        t = _line_search(wt, zt, yt, step, xs, C)
        w[:, todo], z[:, todo] = wt + t * step, zt + t * xs
        before, f[todo] = f[todo], _objective(w[:, todo], z[:, todo], yt, C)
        todo = todo[before - f[todo] > rtol * f[todo]]     # still improving: another step
        if len(todo) == 0:
            break
    if stats is not None:
        stats.update(newton=it + 1, products=products)
    return w


def _conjugate_gradients(hess, g: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """Approximately solve ``hess(s) = -g`` per column, Jacobi-preconditioned, stopping each column
    at ``|residual| <= CG_TOL |g|`` (truncated Newton: any iterate is a descent direction)."""
    s = torch.zeros_like(g)
    r = -g
    q = r / diag
    p = q.clone()
    rq = (r * q).sum(0)
    limit = (CG_TOL ** 2) * g.square().sum(0)
    live = r.square().sum(0) > limit
    for _ in range(MAX_CG):
        if not live.any():
            break
        hp = hess(p)
        alpha = torch.where(live, rq / (p * hp).sum(0).clamp_min(1e-30), 0.0)
        s += alpha * p
        r -= alpha * hp
        live &= r.square().sum(0) > limit
        q = r / diag
        rq_next = (r * q).sum(0)
        p = q + (rq_next / rq.clamp_min(1e-30)) * p
        rq = rq_next
    return s


def _line_search(w, z, y, step, xs, C: float, iters: int = 30) -> torch.Tensor:
    """Per-column exact minimiser ``t`` in [0, 1] of the objective along ``step``: the objective is a
    convex piecewise quadratic in ``t``, so a safeguarded Newton iteration on its derivative
    (piecewise linear and increasing) finds the minimum in a few vector operations."""
    a, b = (w * step).sum(0), step.square().sum(0)           # the penalty's derivative: a + b t
    u, v = 1 - y * z, y * xs                                  # margin of each row: u - t v

    def derivative(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = (u - t * v).clamp_min(0)
        return a + b * t - 2 * C * (v * m).sum(0), b + 2 * C * (v.square() * (m > 0)).sum(0)

    lo, hi = torch.zeros_like(a), torch.ones_like(a)
    d1, _ = derivative(hi)
    t = torch.where(d1 <= 0, hi, torch.zeros_like(a))       # still descending at 1: take the whole step
    search = d1 > 0
    for _ in range(iters):
        if not search.any():
            break
        d, dd = derivative(t)
        lo, hi = torch.where(search & (d < 0), t, lo), torch.where(search & (d > 0), t, hi)
        newton = t - d / dd.clamp_min(1e-30)
        inside = (newton > lo) & (newton < hi)
        t_next = torch.where(inside, newton, (lo + hi) / 2)
        search &= (d.abs() > 1e-7 * (a.abs() + b)) & (hi - lo > 1e-7)
        t = torch.where(search, t_next, t)
    return t
