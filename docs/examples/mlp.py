"""The running example of the docs: a 2-layer MLP loss and its SGD training step.

    irgrad dump docs/examples/mlp.py:loss
    irgrad dump docs/examples/mlp.py:step -p O2
"""

import irgrad as ig
from irgrad import f32, i32


@ig.function
def loss(w1: f32[64, 128], b1: f32[128], w2: f32[128, 10], b2: f32[10],
         x: f32[32, 64], y: i32[32]):
    h = ig.relu(x @ w1 + b1)
    return ig.cross_entropy(h @ w2 + b2, y)


PARAMS = {"w1": f32[64, 128], "b1": f32[128], "w2": f32[128, 10], "b2": f32[10]}


@ig.function
def params_loss(p: PARAMS, x: f32[32, 64], y: i32[32]):
    """The same loss with the parameters as one dict (a training step's first argument)."""
    return loss(p["w1"], p["b1"], p["w2"], p["b2"], x, y)


step = ig.training_step(params_loss, ig.optim.SGD(0.1))
