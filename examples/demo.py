"""irgrad demo: trace a 2-layer MLP loss, print its IR, run it on the interpreter."""

import numpy as np

import irgrad as ig
from irgrad import f32, i32


@ig.function
def mlp_loss(w1: f32[64, 128], b1: f32[128], w2: f32[128, 10], b2: f32[10],
             x: f32[32, 64], y: i32[32]):
    h = ig.relu(x @ w1 + b1)
    return ig.cross_entropy(h @ w2 + b2, y)


def main():
    print(mlp_loss.ir)
    rng = np.random.default_rng(0)
    args = [rng.uniform(-0.125, 0.125, (64, 128)).astype(np.float32), np.zeros(128, np.float32),
            rng.uniform(-0.09, 0.09, (128, 10)).astype(np.float32), np.zeros(10, np.float32),
            rng.standard_normal((32, 64)).astype(np.float32),
            rng.integers(0, 10, 32).astype(np.int32)]
    print("loss on the interpreter:", float(mlp_loss(*args)))


if __name__ == "__main__":
    main()
