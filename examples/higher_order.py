"""Second-order autodiff: Hessian-vector products, checked, then Newton-CG in a few steps.

The problem: multinomial logistic regression on scikit-learn's digits (64 pixels -> 10
classes, float64, L2 penalty on the weights), all parameters in one vector `theta`.

1. `ig.hvp(loss)` builds H v by forward-mode AD over the reverse-mode gradient (one IR
   function, no Hessian matrix). It is checked against central finite differences of
   the gradient, against reverse-over-reverse (`ig.vjp(ig.grad(loss))`, since H is
   symmetric), and for symmetry u.(H v) = v.(H u).
2. Newton-CG: each step solves H p = -g by conjugate gradients, which needs only H v
   products, then takes the largest step 1, 1/2, 1/4, ... that decreases the loss
   enough (Armijo). Gradient descent with the same budget of gradient-sized evaluations
   is printed for comparison.

Run it:  python examples/higher_order.py    or   irgrad train examples/higher_order.py
(an "epoch" here is one Newton step). Look inside:
    irgrad dump examples/higher_order.py:hessian_vector -p O1
    irgrad viz examples/higher_order.py:hessian_vector -o hvp.svg
"""

from __future__ import annotations

import sys
import time

import numpy as np

import irgrad as ig
import irgrad.tools.train
from irgrad import f64, i32

N_IN, N_OUT = 64, 10
N_PARAMS = N_IN * N_OUT + N_OUT
L2 = 1e-4
N_TRAIN = 1438  # the digits training split (for the module-level Functions below)


def unpack(theta):
    """theta [650] -> W [64, 10], b [10]: slices and a reshape, all in the IR."""
    return theta[:N_IN * N_OUT].reshape(N_IN, N_OUT), theta[N_IN * N_OUT:]


def loss_fn(theta, x, y):
    """Mean softmax cross-entropy plus L2 / 2 |W|^2."""
    w, b = unpack(theta)
    return ig.cross_entropy(x @ w + b, y) + (0.5 * L2) * (w * w).sum()


def make_functions(n: int):
    """(loss, gradient, Hessian-vector product, reverse-over-reverse H v) for n examples."""
    loss = ig.trace(loss_fn, f64[N_PARAMS], f64[n, N_IN], i32[n], name="loss")
    gradient = ig.grad(loss, argnums=0)             # (theta, x, y) -> g
    hvp = ig.hvp(loss, argnums=0)                   # (theta, x, y, v) -> H v  (fwd over rev)
    hvp_rev = ig.vjp(gradient, argnums=0)           # (theta, x, y, v) -> H^T v (rev over rev)
    return loss, gradient, hvp, hvp_rev


# Module-level Functions for `irgrad dump/viz/memplan FILE.py:NAME`.
loss, gradient, hessian_vector, hessian_vector_rev = make_functions(N_TRAIN)


def load_data(seed: int = 0):
    datasets = irgrad.tools.train.require("sklearn.datasets", "examples", "the digits data")
    digits = datasets.load_digits()
    x = digits.data / 16.0
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * 0.2))
    test, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[test], y[test]


def check_hvp(f, g, hv, hv_rev, theta, x, y, rng, n_dirs: int = 3, eps: float = 1e-5):
    """Largest relative error of H v against finite differences and reverse-over-reverse."""
    worst_fd = worst_rr = worst_sym = 0.0
    for _ in range(n_dirs):
        v = rng.standard_normal(theta.shape)
        u = rng.standard_normal(theta.shape)
        h = hv(theta, x, y, v)
        fd = (g(theta + eps * v, x, y) - g(theta - eps * v, x, y)) / (2 * eps)
        worst_fd = max(worst_fd, np.linalg.norm(h - fd) / np.linalg.norm(fd))
        worst_rr = max(worst_rr, np.linalg.norm(h - hv_rev(theta, x, y, v)) / np.linalg.norm(h))
        uhv, vhu = u @ h, v @ hv(theta, x, y, u)
        worst_sym = max(worst_sym, abs(uhv - vhu) / abs(uhv))
    return {"fd": worst_fd, "rev_over_rev": worst_rr, "symmetry": worst_sym}


def conjugate_gradient(hv, b, max_iter: int, tol: float):
    """Solve H p = b for symmetric positive definite H given only p -> H p.
    Returns (p, iterations)."""
    p = np.zeros_like(b)
    r = b.copy()
    d = r.copy()
    rr = r @ r
    for i in range(1, max_iter + 1):
        hd = hv(d)
        curvature = d @ hd
        if curvature <= 0:  # not positive definite along d: stop with what we have
            return (p if i > 1 else b), i
        alpha = rr / curvature
        p += alpha * d
        r -= alpha * hd
        rr_new = r @ r
        if np.sqrt(rr_new) <= tol:
            return p, i
        d = r + (rr_new / rr) * d
        rr = rr_new
    return p, max_iter


def newton_cg(f, g, hv, theta, x, y, steps: int, log=print, max_cg: int = 100):
    """Newton-CG with Armijo backtracking. Returns (theta, losses, evaluations), where
    evaluations counts gradient-sized calls (one gradient or one H v product)."""
    losses = [float(f(theta, x, y))]
    evaluations = 0
    for k in range(1, steps + 1):
        grad = g(theta, x, y)
        gnorm = np.linalg.norm(grad)
        # a truncated Newton step: solve more exactly as the gradient shrinks
        tol = min(0.5, np.sqrt(gnorm)) * gnorm
        p, iters = conjugate_gradient(lambda v: hv(theta, x, y, v), -grad, max_cg, tol)
        evaluations += 1 + iters
        t, slope = 1.0, grad @ p
        while t > 1e-8:
            trial = float(f(theta + t * p, x, y))
            if trial <= losses[-1] + 1e-4 * t * slope:
                break
            t /= 2
        theta = theta + t * p
        losses.append(trial)
        log(f"Newton step {k}: loss {losses[-1]:.6f}  |gradient| {gnorm:.2e}  "
            f"CG iterations {iters:3d}  step {t:g}")
        if gnorm < 1e-10:
            break
    return theta, losses, evaluations


def gradient_descent(f, g, theta, x, y, steps: int, lr: float):
    for _ in range(steps):
        theta = theta - lr * g(theta, x, y)
    return theta, float(f(theta, x, y))


def accuracy(theta, x, y) -> float:
    w, b = theta[:N_IN * N_OUT].reshape(N_IN, N_OUT), theta[N_IN * N_OUT:]
    return float(np.mean(np.argmax(x @ w + b, axis=1) == y))


def add_arguments(parser):
    parser.add_argument("--gd-lr", type=float, default=None,
                        help="learning rate of the gradient-descent baseline (default 1.0)")


def train(backend="cpu", epochs=10, pipeline="O2", threads=None, seed=0, gd_lr=1.0, data=None,
          log=print):
    """Check hvp, then run `epochs` Newton-CG steps. `data` = (x_train, y_train, x_test,
    y_test) replaces the digits (tests use a small random problem). Returns a dict."""
    backend = irgrad.tools.train.resolve_backend(backend, threads, log=log)
    opts = irgrad.tools.train.backend_options(backend, threads)
    x, y, x_test, y_test = data if data is not None else load_data()
    log(f"multinomial logistic regression: {len(x)} training examples, {N_PARAMS} parameters, "
        f"L2 {L2}, float64")
    t0 = time.perf_counter()
    fns = make_functions(len(x))
    f, g, hv, hv_rev = (ig.compile(fn, backend=backend, pipeline=pipeline, **opts) for fn in fns)
    log(f"compiled loss, gradient, hvp (forward over reverse) and reverse-over-reverse hvp "
        f"for the {backend} backend in {time.perf_counter() - t0:.2f} s "
        f"(hvp: {fns[2].ir.num_ops()} ops traced)")

    rng = np.random.default_rng(seed)
    theta_probe = 0.1 * rng.standard_normal(N_PARAMS)
    errors = check_hvp(f, g, hv, hv_rev, theta_probe, x, y, rng)
    log(f"H v vs central differences of the gradient: relative error {errors['fd']:.1e}\n"
        f"H v forward-over-reverse vs reverse-over-reverse: {errors['rev_over_rev']:.1e}\n"
        f"symmetry |u.Hv - v.Hu| / |u.Hv|: {errors['symmetry']:.1e}")

    theta0 = np.zeros(N_PARAMS)
    t0 = time.perf_counter()
    theta, losses, evals = newton_cg(f, g, hv, theta0, x, y, epochs, log=log)
    seconds = time.perf_counter() - t0
    log(f"Newton-CG: loss {losses[0]:.6f} -> {losses[-1]:.6f} in {len(losses) - 1} steps "
        f"({evals} gradient-sized evaluations, {seconds:.2f} s); test accuracy "
        f"{accuracy(theta, x_test, y_test):.2%}")
    _, gd_loss = gradient_descent(f, g, theta0, x, y, evals, gd_lr)
    log(f"gradient descent (lr {gd_lr}) with the same {evals} evaluations: loss {gd_loss:.6f}")
    return {"hvp_errors": errors, "losses": losses, "gd_loss": gd_loss, "evaluations": evals,
            "seconds": seconds, "theta": theta, "backend": backend}


if __name__ == "__main__":
    sys.exit(irgrad.tools.train.main(sys.modules[__name__]))
