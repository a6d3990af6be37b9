"""Mutation fuzzing of printed IR: however a user edits it, irgrad gives a clean error or
the interpreter's results, and never crashes, hangs, corrupts memory or computes a wrong
number.

The corpus is the printed IR of test programs (random programs from tests/strategies.py,
a hand-planned function, the W1 training step), each before optimization and after O2
(fused kernels and a memory plan). Every case edits one to three places: a type's
dimension or dtype, an attribute value, a kernel's kind, an operand, an op name, a
memory placement, the arena size, a `donate` list, a whole line. tests/fuzz_worker.py
runs the cases in a subprocess (a crash or a hang is caught and named, and the worker
restarts at the next case): `irgrad check` and `irgrad run` on some, then parsing and
`ig.compile` at O0, O1 and O2 on the numpy and cpu backends against the interpreter.

`IRGRAD_FUZZ_CASES` sets the number of cases (default 60 here; the reliability issue's
note quotes a longer run), `IRGRAD_FUZZ_SEED` the seed.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import irgrad as ig
import workloads
from irgrad.ir.registry import all_ops
from irgrad.transforms.training import _spec_tree

from strategies import HAND_PLANNED, programs
from case_workers import run_case_workers

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
N_CASES = int(os.environ.get("IRGRAD_FUZZ_CASES", "60"))
SEED = int(os.environ.get("IRGRAD_FUZZ_SEED", "0"))
CASE_TIMEOUT = 60.0

GATHER = """\
func @g(%t: f32[5,3], %i: i32[4], %u: f32[4,3]) -> (f32[4,3], f32[5,3]) {
  %0 = gather %t, %i {axis=0} : f32[4,3]
  %1 = scatter_add %t, %i, %u {axis=0} : f32[5,3]
  %2 = slice %0 {start=[1, 0], limit=[3, 3]} : f32[2,3]
  %3 = pad %2 {low=[1, 0], high=[1, 0]} : f32[4,3]
  %4 = concat %3, %0 {axis=1} : f32[4,6]
  %5 = reshape %4 : f32[4,3,2]
  %6 = reduce_max %5 {axes=[2]} : f32[4,3]
  return %6, %1
}
"""

DTYPES = ("f32", "f64", "i32", "i64", "bool")
KINDS = ("loop", "reduce", "matmul", "lop", "")
INT_RE = re.compile(r"(?<![%\w.\-])-?\d+(?![\w.])")
NAME_RE = re.compile(r"%[A-Za-z0-9_.]+")
OP_RE = re.compile(r"= ([a-z_]+)")


def _mutate_int(rng, text):
    spots = list(INT_RE.finditer(text))
    if not spots:
        return text
    m = rng.choice(spots)
    v = int(m.group())
    new = rng.choice([0, 1, -1, v + 1, v - 1, v * 2, v // 2, v + 64, v - 64, 3, 64, 2 ** 31, 2 ** 62,
                      rng.randrange(0, 4096) * 64, rng.randrange(-10, 10)])
    return text[:m.start()] + str(new) + text[m.end():]


def _mutate_dtype(rng, text):
    spots = [m for d in DTYPES for m in re.finditer(rf"\b{d}\b", text)]
    if not spots:
        return text
    m = rng.choice(spots)
    return text[:m.start()] + rng.choice(DTYPES) + text[m.end():]


def _mutate_operand(rng, text):
    names = sorted(set(NAME_RE.findall(text)))
    uses = [m for m in NAME_RE.finditer(text) if not re.match(r"\s*(=|,\s*%[\w.]+\s*=|:)", text[m.end():])]
    if not uses or len(names) < 2:
        return text
    m = rng.choice(uses)
    return text[:m.start()] + rng.choice(names) + text[m.end():]


def _mutate_opname(rng, text):
    spots = list(OP_RE.finditer(text))
    if not spots:
        return text
    m = rng.choice(spots)
    name = rng.choice(sorted(all_ops()))
    return text[:m.start(1)] + name + text[m.end(1):]


def _mutate_kind(rng, text):
    spots = list(re.finditer(r'kind="[a-z]*"', text))
    if not spots:
        return _mutate_int(rng, text)
    m = rng.choice(spots)
    return text[:m.start()] + f'kind="{rng.choice(KINDS)}"' + text[m.end():]


def _mutate_placement(rng, text):
    spots = list(re.finditer(r"(mem|scratch)\[([^\]]*)\]", text))
    if not spots:
        return text.replace(" {", " attributes {arena_bytes=64} {", 1) if "attributes" not in text else text
    m = rng.choice(spots)
    params = re.findall(r"\((%[\w.]+):", text.splitlines()[0]) or re.findall(r"(%[\w.]+):", text.splitlines()[0])
    parts = [p.strip() for p in m.group(2).split(",")]
    i = rng.randrange(len(parts))
    parts[i] = rng.choice([str(rng.randrange(0, 64) * 64), str(rng.randrange(0, 4096)), "0",
                           rng.choice(params) if params else "0", "999999936"])
    return text[:m.start(2)] + ", ".join(parts) + text[m.end(2):]


def _mutate_function_attrs(rng, text):
    first, _, rest = text.partition("\n")
    choice = rng.randrange(3)
    if choice == 0 and "arena_bytes=" in first:
        first = re.sub(r"arena_bytes=\d+", f"arena_bytes={rng.choice([0, 64, 100, 2 ** 40])}", first)
    elif choice == 1:
        n = first.count("%")
        donate = [rng.choice([-1, 0, 1, 2, n]) for _ in range(rng.randrange(0, 4))]
        if "donate=" in first:
            first = re.sub(r"donate=\[[^\]]*\]", f"donate={donate}", first)
        elif "attributes {" in first:
            first = first.replace("attributes {", f"attributes {{donate={donate}, ", 1)
        else:
            first = first[:-1] + f"attributes {{donate={donate}}} {{"
    else:
        first = re.sub(r"(naive_bytes|lower_bound_bytes)=\d+", r"\1=-5", first)
    return first + "\n" + rest


def _mutate_line(rng, text):
    lines = text.splitlines()
    body = [i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith("func") and ln.strip() != "}"]
    if not body:
        return text
    i = rng.choice(body)
    if rng.random() < 0.5:
        del lines[i]
    else:
        lines.insert(i, lines[i])
    return "\n".join(lines) + "\n"


MUTATIONS = [_mutate_int, _mutate_int, _mutate_dtype, _mutate_operand, _mutate_opname,
             _mutate_kind, _mutate_placement, _mutate_placement, _mutate_function_attrs, _mutate_line]


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.choice([1, 1, 2, 3])):
        text = rng.choice(MUTATIONS)(rng, text)
    return text


def corpus(random_programs) -> list[str]:
    texts = [HAND_PLANNED, GATHER]
    for f in random_programs:
        texts.append(str(f))
    w = workloads.get("W1")
    params = w.init_params()
    step = ig.training_step(ig.trace(w.loss_fn, _spec_tree(params), *w.batch_specs), w.optimizer())
    texts.append(str(step.ir))
    planned = []
    for t in texts:
        m = ig.parse(t)
        f = next(iter(m))
        planned.append(str(ig.run_pipeline(f, "O2")))
    return texts + planned


def run_cases(cases) -> list[tuple[int, str, str]]:
    """Run every case in worker subprocesses; returns (index, outcome, detail) for each."""
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"irgrad-fuzz-{os.getpid()}.json")
    with open(path, "w") as fh:
        json.dump(cases, fh)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + HERE, IRGRAD_CACHE="0")
    try:
        results = run_case_workers([sys.executable, os.path.join(HERE, "fuzz_worker.py"), path],
                                   len(cases), env, CASE_TIMEOUT)
    finally:
        os.unlink(path)
    return [(i, *results[i]) for i in sorted(results)]


@settings(max_examples=1, database=None, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(progs=st.lists(programs(max_ops=8), min_size=12, max_size=12))
def test_mutated_ir_gives_clean_errors_or_the_interpreters_results(progs):
    texts = corpus([p.function for p in progs])
    rng = random.Random(SEED)
    cases = []
    for i in range(N_CASES):
        cases.append({"text": mutate(rng, rng.choice(texts)), "seed": rng.randrange(1 << 16),
                      "cli": i % 4 == 0})
    results = run_cases(cases)
    assert len(results) == len(cases)
    counts = Counter(outcome for _, outcome, _ in results)
    runs = sum(int(d.split()[0]) for _, o, d in results if o == "checked")
    print(f"\nfuzz: {len(cases)} cases: {dict(counts)}; {runs} compiled runs equal to the interpreter")
    if os.environ.get("IRGRAD_FUZZ_VERBOSE"):
        for i, outcome, detail in results:
            print(i, outcome, detail)
    failures = [(i, outcome, detail) for i, outcome, detail in results if outcome.startswith("FAIL")]
    if failures:
        i, outcome, detail = failures[0]
        pytest.fail(f"{len(failures)} of {len(cases)} cases failed; first: case {i} {outcome}: "
                    f"{detail}\n--- the case ---\n{cases[i]['text']}")
    assert counts["checked"] > 0  # the fuzzer reaches code generation, not only the parser
