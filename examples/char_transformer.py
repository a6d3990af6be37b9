"""Train a tiny byte-level transformer (the W4 model) on a real text, then sample from it.

The model: token + learned position embeddings, one pre-LayerNorm decoder block (causal
4-head attention, MLP 512 with tanh GELU), final LayerNorm, output head; vocab 256 (bytes),
context 64, d_model 128, batch 8. The text: by default every license under
/usr/share/common-licenses (about 240 KB of English on a Debian-like system), any other
file with --text. Every tenth block of 2 KiB of the text is held out to measure the validation loss.
Training uses Adam; one whole step (forward, backward, Adam update) is one native call.

Run it:  python examples/char_transformer.py   or   irgrad train examples/char_transformer.py
Look inside:
    irgrad dump examples/char_transformer.py:loss -p O2
    irgrad viz examples/char_transformer.py:loss -o transformer.svg
    irgrad memplan examples/char_transformer.py:step -o transformer-memory.png
    irgrad bench examples/char_transformer.py:step --pipelines O1 O2
"""

from __future__ import annotations

import glob
import math
import os
import re
import sys
import time

import numpy as np

import irgrad as ig
import irgrad.tools.train
from irgrad import i32

VOCAB, SEQ, BATCH = 256, 64, 8
D_MODEL, HEADS, D_FF = 128, 4, 512
LR = 3e-3
DEFAULT_TEXT = "/usr/share/common-licenses"

model = ig.nn.TinyTransformer(vocab=VOCAB, seq=SEQ, d_model=D_MODEL, n_heads=HEADS, d_ff=D_FF)
param_specs = ig.tree_map(ig.TensorSpec.of, model.init(0))

# Module-level Functions for `irgrad dump/viz/memplan/bench FILE.py:NAME` (traced, not trained).
loss = ig.trace(model.loss, param_specs, i32[BATCH, SEQ], i32[BATCH, SEQ], name="loss")
step = ig.training_step(loss, ig.optim.Adam(LR), name="step")


def load_text(path: str = DEFAULT_TEXT, squeeze: bool = True) -> bytes:
    """The bytes of a file, or of every file in a directory (sorted; duplicates and symlinks
    to the same file read once). With `squeeze`, runs of spaces and tabs become one space:
    the licenses centre their titles with dozens of spaces, and a model that sees 64 bytes
    back cannot count them, so samples would drown in blanks."""
    if os.path.isdir(path):
        files = sorted({os.path.realpath(p) for p in glob.glob(os.path.join(path, "*"))
                        if os.path.isfile(p)})
        if not files:
            raise ig.IrgradError(f"no files in {path}; pass a text file with --text FILE")
        raw = b"\n\n".join(open(p, "rb").read() for p in files)
    elif not os.path.isfile(path):
        raise ig.IrgradError(f"no text at {path}; pass any text file with --text FILE")
    else:
        with open(path, "rb") as fh:
            raw = fh.read()
    return re.sub(rb"[ \t]+", b" ", raw) if squeeze else raw


def split(data: np.ndarray, seq: int, block: int = 2048, every: int = 10):
    """Window starts for training and for validation: every `every`-th block of `block`
    bytes is held out (so both sides see every kind of text), and no window of seq + 1
    bytes crosses from one side to the other."""
    held = (np.arange(len(data)) // block) % every == every - 1
    if not held.any() or held.all():  # a short text: hold out its last tenth
        held = np.arange(len(data)) >= len(data) - max(len(data) // every, seq + 1)
    starts = np.arange(len(data) - seq)
    # bytes from the held-out side within each window (prefix sums)
    c = np.concatenate([[0], np.cumsum(held)])
    n_held = c[starts + seq + 1] - c[starts]
    return starts[n_held == 0], starts[n_held == seq + 1]


def batches(data: np.ndarray, starts: np.ndarray, rng, batch: int, seq: int):
    """Random windows of seq + 1 bytes: (inputs, next-byte targets), int32."""
    s = starts[rng.integers(0, len(starts), batch)]
    windows = data[s[:, None] + np.arange(seq + 1)]
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])


def sample(forward, params, prompt: bytes, n: int, seq: int, temperature: float, rng) -> bytes:
    """Generate n bytes after `prompt` with a compiled forward pass over one context window.

    The model is causal, so a prompt shorter than the window is padded on the right and
    the logits at its last position are exact; longer contexts keep their last `seq` bytes.
    """
    out = list(prompt or b"\n")
    for _ in range(n):
        ctx = out[-seq:]
        ids = np.zeros((1, seq), np.int32)
        ids[0, :len(ctx)] = ctx
        logits = np.asarray(forward(params, ids), np.float64)[0, len(ctx) - 1]
        if temperature <= 0:
            nxt = int(np.argmax(logits))
        else:
            z = logits / temperature
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
        out.append(nxt)
    return bytes(out)


def add_arguments(parser):
    parser.add_argument("--text", default=None, metavar="PATH",
                        help=f"a text file, or a directory of them (default {DEFAULT_TEXT})")
    parser.add_argument("--steps-per-epoch", type=int, default=None, metavar="N",
                        help="training steps in one epoch (default 500)")
    parser.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {LR})")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default=None,
                        help="adam (default) or sgd (plain, learning rate --lr)")
    parser.add_argument("--prompt", default=None, help="text to continue when sampling")
    parser.add_argument("--sample-bytes", type=int, default=None, metavar="N",
                        help="bytes to generate at the end (default 400)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature, 0 for greedy (default 0.7)")
    parser.add_argument("--keep-spacing", action="store_true",
                        help="keep runs of spaces and tabs (by default squeezed to one space)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (there are none "
                        "when the output is not a terminal)")


def train(backend="cpu", epochs=6, pipeline="O2", threads=None, seed=0, text=DEFAULT_TEXT,
          steps_per_epoch=500, lr=LR, optimizer="adam", prompt="This License ",
          sample_bytes=400, temperature=0.7, keep_spacing=False, quiet=False, eval_batches=16,
          d_model=D_MODEL, n_heads=HEADS, d_ff=D_FF, seq=SEQ, batch=BATCH):
    """Train; returns {"losses": per-epoch mean training loss, "val_losses", "seconds",
    "sample": the generated text, "backend"}. The model-size keywords exist for tests."""
    backend = irgrad.tools.train.resolve_backend(backend, threads)
    opts = irgrad.tools.train.backend_options(backend, threads)
    raw = load_text(text or DEFAULT_TEXT, squeeze=not keep_spacing)
    data = np.frombuffer(raw, np.uint8).astype(np.int32)
    train_starts, val_starts = split(data, seq)
    if not len(train_starts) or not len(val_starts):
        raise ig.IrgradError(f"the text at {text} has {len(data)} bytes, too few for training "
                             f"and validation windows of {seq + 1} bytes")
    net = ig.nn.TinyTransformer(vocab=VOCAB, seq=seq, d_model=d_model, n_heads=n_heads, d_ff=d_ff)
    params = net.init(seed)
    n_params = sum(a.size for a in ig.pytree.flatten(params)[0])
    opt = ig.optim.Adam(lr) if optimizer == "adam" else ig.optim.SGD(lr)
    print(f"text: {text} ({len(raw):,} bytes{'' if keep_spacing else ' with spaces squeezed'}; "
          f"every tenth block of 2 KiB held out for validation)"
          f"\nmodel: {n_params:,} parameters (d_model {d_model}, {n_heads} heads, MLP "
          f"{d_ff}, context {seq}); {opt!r}, batch {batch}")

    t0 = time.perf_counter()
    specs = ig.tree_map(ig.TensorSpec.of, params)
    train_step = ig.compile_step(net.loss, params, opt, (i32[batch, seq], i32[batch, seq]),
                                 backend=backend, pipeline=pipeline, **opts)
    val_loss_fn = ig.compile(ig.trace(net.loss, specs, i32[batch, seq], i32[batch, seq],
                                      name="val_loss"), backend=backend, pipeline=pipeline, **opts)
    forward = ig.compile(ig.trace(net, specs, i32[1, seq], name="forward"), backend=backend,
                         pipeline=pipeline, **opts)
    print(f"compiled the step, the validation loss and the forward pass for the {backend} "
          f"backend (pipeline {pipeline}) in {time.perf_counter() - t0:.1f} s")

    val_rng = np.random.default_rng(1234)
    val_set = [batches(data, val_starts, val_rng, batch, seq) for _ in range(eval_batches)]

    def validate():
        return float(np.mean([float(val_loss_fn(train_step.params, x, y)) for x, y in val_set]))

    rng = np.random.default_rng(seed)
    losses, val_losses = [], []
    print(f"before training: validation loss {validate():.3f} (uniform guessing: "
          f"{math.log(VOCAB):.3f} nats per byte)")
    seconds = 0.0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        total = 0.0
        bar = irgrad.tools.train.progress(range(steps_per_epoch), desc=f"epoch {epoch}/{epochs}", leave=False,
                   disable=True if quiet else None, unit="step", file=sys.stdout, mininterval=0.5)
        for i in bar:
            value = train_step(*batches(data, train_starts, rng, batch, seq))
            if not math.isfinite(value):
                raise ig.IrgradError(f"the loss became {value} at step {i + 1} of epoch {epoch}; "
                                     f"try a smaller --lr")
            total += value
            if i % 50 == 49:
                bar.set_postfix(loss=f"{total / (i + 1):.3f}")
        bar.close()
        seconds += time.perf_counter() - t0
        losses.append(total / steps_per_epoch)
        val_losses.append(validate())
        print(f"epoch {epoch}/{epochs}  loss {losses[-1]:.3f}  "
              f"validation loss {val_losses[-1]:.3f} "
              f"({val_losses[-1] / math.log(2):.2f} bits/byte)  {seconds:6.1f} s")
    print(f"trained {epochs * steps_per_epoch} steps in {seconds:.1f} s on the {backend} backend "
          f"({seconds / max(1, epochs * steps_per_epoch) * 1e3:.1f} ms per step)")

    text_out = b""
    if sample_bytes:
        p = prompt.encode() if isinstance(prompt, str) else bytes(prompt)
        how = "greedy" if temperature <= 0 else f"temperature {temperature}"
        text_out = sample(forward, train_step.params, p, sample_bytes, seq, temperature,
                          np.random.default_rng(seed))
        print(f"\nsample ({how}, prompt {p.decode(errors='replace')!r}):\n" + "-" * 72)
        print(text_out.decode("utf-8", errors="replace"))
        print("-" * 72)
    return {"losses": losses, "val_losses": val_losses, "seconds": seconds,
            "sample": text_out, "backend": backend}


if __name__ == "__main__":
    sys.exit(irgrad.tools.train.main(sys.modules[__name__]))
