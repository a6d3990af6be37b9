"""RNN, GRU and LSTM, unrolled over the static sequence length (the IR has no loops).

The input projection X W^T + Wb of every time step is one matmul; each step then adds
H R^T + Rb and applies the cell. Directions: forward runs t = 0..T-1, reverse T-1..0,
bidirectional both (each with its own weights and activations). `sequence_lens` masks
the steps past a batch entry's length: the state stops changing there and Y is 0, so
Y_h is the state after the last valid step (for reverse, the first valid step is
len-1, as ONNX Runtime reads it). `layout=1` swaps the batch and sequence axes of X,
the initial states and the outputs.
"""

from __future__ import annotations

from ...frontend import library as L
from ...frontend.tensor import Tensor
from . import onnx_op


# --- activations ---------------------------------------------------------------------------------

def _hard_sigmoid(x, a, b):
    return L.clip(x * a + b, 0.0, 1.0)


# name -> (function(x, alpha, beta), default alpha, default beta); a None default means the
# function takes no such parameter, so it consumes nothing from activation_alpha/_beta
_ACTIVATIONS = {
    "relu": (lambda x, a, b: L.relu(x), None, None),
    "tanh": (lambda x, a, b: L.tanh(x), None, None),
    "sigmoid": (lambda x, a, b: L.sigmoid(x), None, None),
    "affine": (lambda x, a, b: x * a + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: L.where(x >= 0.0, x, x * a), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: L.where(x > a, x, 0.0), 1.0, None),
    "scaledtanh": (lambda x, a, b: L.tanh(x * b) * a, 1.0, 1.0),
    "hardsigmoid": (_hard_sigmoid, 0.2, 0.5),
    "elu": (lambda x, a, b: L.elu(x, a), 1.0, None),
    "softsign": (lambda x, a, b: x / (L.abs(x) + 1.0), None, None),
    "softplus": (lambda x, a, b: L.softplus(x), None, None),
}


def activations(node, defaults: list[str], n_dirs: int):
    """The cell's activation functions, one list per direction. activation_alpha and
    activation_beta are consumed in order by the functions that take them (ONNX
    Runtime's reading); a function without a value gets its op's default."""
    names = node.attr("activations", None) or defaults * n_dirs
    if len(names) == len(defaults) and n_dirs == 2:
        names = names * 2
    if len(names) != len(defaults) * n_dirs:
        raise node.error(f"activations {names} must name {len(defaults)} function(s) per "
                         f"direction ({n_dirs} direction(s))")
    alphas = list(node.attr("activation_alpha", None) or [])
    betas = list(node.attr("activation_beta", None) or [])
    fns = []
    for nm in names:
        entry = _ACTIVATIONS.get(nm.lower())
        if entry is None:
            raise node.fail(f"activation '{nm}' is not supported (irgrad knows "
                            f"{', '.join(sorted(_ACTIVATIONS))})")
        fn, da, db = entry
        a = (alphas.pop(0) if alphas else da) if da is not None else None
        b = (betas.pop(0) if betas else db) if db is not None else None
        fns.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    k = len(defaults)
    return [fns[d * k:(d + 1) * k] for d in range(n_dirs)]


# --- the common unrolling ------------------------------------------------------------------------

class Recurrence:
    """The parts every recurrent op reads: X as [T, B, I], W, R, the biases, the
    initial states as [D, B, H], the directions and the optional sequence lengths."""

    def __init__(self, node, n_gates: int, n_states: int):
        self.node = node
        self.layout = node.attr("layout", 0) if node.opset >= 14 else 0
        x = node.tensor(0)
        if x.ndim != 3:
            raise node.error(f"X must be 3-D, got {list(x.shape)}")
        if self.layout:
            x = L.transpose(x, (1, 0, 2))
        self.x = x
        self.T, self.B, _ = x.shape
        w, r = node.tensor(1), node.tensor(2)
        self.D = w.shape[0]
        direction = node.attr("direction", "forward")
        want = 2 if direction == "bidirectional" else 1
        if direction not in ("forward", "reverse", "bidirectional") or self.D != want:
            raise node.error(f"direction '{direction}' does not fit W of shape {list(w.shape)}")
        self.dirs = ["forward", "reverse"] if want == 2 else [direction]
        self.H = node.attr("hidden_size", r.shape[-1])
        gh = n_gates * self.H
        if w.shape[1] != gh or tuple(r.shape) != (self.D, gh, self.H):
            raise node.error(f"W {list(w.shape)} and R {list(r.shape)} do not fit "
                             f"hidden_size {self.H} with {n_gates} gate(s)")
        self.w, self.r = w, r
        self.bias = node.tensor(3) if node.has(3) else L.zeros((self.D, 2 * gh), x.dtype)
        self.lens = node.tensor(4) if node.has(4) else None
        self.initial = []
        for k in range(n_states):
            i = 5 + k
            if node.has(i):
                s = node.tensor(i)
                self.initial.append(L.transpose(s, (1, 0, 2)) if self.layout else s)
            else:
                self.initial.append(L.zeros((self.D, self.B, self.H), x.dtype))
        clip = node.attr("clip", None)
        self.clip = None if clip is None else float(clip)

    def clipped(self, g: Tensor) -> Tensor:
        """The input of an activation, bounded to [-clip, clip] when `clip` is set."""
        return g if self.clip is None else L.clip(g, -self.clip, self.clip)

    def run(self, cell) -> tuple[Tensor, list[Tensor]]:
        """Y [T, D, B, H] and the final states, each [D, B, H] (before the layout swap).
        `cell(d, xw_t, states) -> (new states, h)` computes one step of direction d from
        xw_t = x_t W^T + Wb."""
        gh = self.w.shape[1]
        ys, finals = [], []
        for d, kind in enumerate(self.dirs):
            xw = L.matmul(self.x, L.transpose(self.w[d], (1, 0))) + self.bias[d, :gh]
            states = [s[d] for s in self.initial]
            out = [None] * self.T
            steps = range(self.T) if kind == "forward" else range(self.T - 1, -1, -1)
            for t in steps:
                new, h = cell(d, xw[t], states)
                if self.lens is not None:
                    valid = L.reshape(self.lens > t, (self.B, 1))
                    new = [L.where(valid, n, s) for n, s in zip(new, states)]
                    h = L.where(valid, h, 0.0)
                states = new
                out[t] = h
            ys.append(L.stack(out, axis=0))
            finals.append(states)
        y = L.stack(ys, axis=1)
        return y, [L.stack([f[k] for f in finals], axis=0) for k in range(len(finals[0]))]

    def outputs(self, y: Tensor, states: list[Tensor]) -> list[Tensor]:
        if self.layout:
            y = L.transpose(y, (2, 0, 1, 3))
            states = [L.transpose(s, (1, 0, 2)) for s in states]
        return [y] + states

    def recurrent(self, d: int, h: Tensor, lo: int, hi: int) -> Tensor:
        """h R[d][lo:hi]^T + Rb[d][lo:hi]: the recurrent part of gates lo..hi."""
        gh = self.w.shape[1]
        rt = L.transpose(self.r[d, lo:hi], (1, 0))
        return L.matmul(h, rt) + self.bias[d, gh + lo:gh + hi]


# --- RNN -----------------------------------------------------------------------------------------

@onnx_op("RNN")
def rnn(node):
    # H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)
    rec = Recurrence(node, 1, 1)
    acts = activations(node, ["Tanh"], rec.D)
    H = rec.H

    def cell(d, xw, states):
        (h,) = states
        h = acts[d][0](rec.clipped(xw + rec.recurrent(d, h, 0, H)))
        return [h], h

    y, states = rec.run(cell)
    return rec.outputs(y, states)


# --- GRU -----------------------------------------------------------------------------------------

@onnx_op("GRU")
def gru(node):
    # z = f(X Wz^T + H Rz^T + Wbz + Rbz)    r = f(X Wr^T + H Rr^T + Wbr + Rbr)
    # h~ = g(X Wh^T + (r * H) Rh^T + Rbh + Wbh)          (linear_before_reset = 0)
    # h~ = g(X Wh^T + r * (H Rh^T + Rbh) + Wbh)          (linear_before_reset = 1)
    # H' = (1 - z) * h~ + z * H
    rec = Recurrence(node, 3, 1)
    acts = activations(node, ["Sigmoid", "Tanh"], rec.D)
    H = rec.H
    lbr = node.attr("linear_before_reset", 0)

    def cell(d, xw, states):
        (h,) = states
        f, g = acts[d]
        zr = f(rec.clipped(xw[:, :2 * H] + rec.recurrent(d, h, 0, 2 * H)))
        z, r = zr[:, :H], zr[:, H:]
        if lbr:
            pre = xw[:, 2 * H:] + r * rec.recurrent(d, h, 2 * H, 3 * H)
        else:
            pre = xw[:, 2 * H:] + rec.recurrent(d, r * h, 2 * H, 3 * H)
        hh = g(rec.clipped(pre))
        h = (1.0 - z) * hh + z * h
        return [h], h

    y, states = rec.run(cell)
    return rec.outputs(y, states)


# --- LSTM ----------------------------------------------------------------------------------------

@onnx_op("LSTM")
def lstm(node):
    # gates = X W^T + H R^T + Wb + Rb, split i, o, f, c;  P = (Pi, Po, Pf) the peepholes
    # i = f(gi + Pi * C)   f = f(gf + Pf * C)   (input_forget: f = 1 - i)   c~ = g(gc)
    # C' = f * C + i * c~   o = f(go + Po * C')   H' = o * h(C')
    rec = Recurrence(node, 4, 2)
    acts = activations(node, ["Sigmoid", "Tanh", "Tanh"], rec.D)
    H = rec.H
    if node.has(7):
        p = node.tensor(7)
        if tuple(p.shape) != (rec.D, 3 * H):
            raise node.error(f"P must have shape [{rec.D}, {3 * H}], got {list(p.shape)}")
    else:
        p = None
    coupled = node.attr("input_forget", 0)

    def cell(d, xw, states):
        h, c = states
        f, g, hf = acts[d]
        gates = xw + rec.recurrent(d, h, 0, 4 * H)
        gi, go, gf, gc = (gates[:, k * H:(k + 1) * H] for k in range(4))
        if p is not None:
            gi = gi + p[d, :H] * c
            gf = gf + p[d, 2 * H:] * c
        i = f(rec.clipped(gi))
        fg = 1.0 - i if coupled else f(rec.clipped(gf))
        c = fg * c + i * g(rec.clipped(gc))
        if p is not None:
            go = go + p[d, H:2 * H] * c
        o = f(rec.clipped(go))
        h = o * hf(c)
        return [h, c], h

    y, states = rec.run(cell)
    return rec.outputs(y, states)
