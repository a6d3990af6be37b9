"""Run numbered test cases in worker subprocesses, so that a crash or a hang costs one case
and names it (tests/test_fuzz_ir.py, tests/test_onnx_import.py).

A worker is `command + [str(start)]`: it runs cases start, start+1, ... and prints
`START i` before and `DONE i OUTCOME JSON` after each. A case without a DONE is
("FAIL-hang", ...) after `timeout` seconds (the worker is killed) or ("FAIL-crash", ...)
when the worker dies; a new worker then goes on with the next case."""

from __future__ import annotations

import json
import select
import subprocess
import time


def run_case_workers(command: list[str], n_cases: int, env: dict, timeout: float) -> dict:
    results: dict[int, tuple[str, object]] = {}
    start = 0
    while start < n_cases:
        proc = subprocess.Popen(command + [str(start)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        current, began = None, time.monotonic()
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                if not line:
                    break
                word, _, rest = line.strip().partition(" ")
                if word == "START":
                    current, began = int(rest), time.monotonic()
                elif word == "DONE":
                    i, outcome, detail = rest.split(" ", 2)
                    results[int(i)] = (outcome, json.loads(detail))
                    current = None
            elif current is not None and time.monotonic() - began > timeout:
                proc.kill()
                results[current] = ("FAIL-hang", f"no result after {timeout:.0f} s")
                break
        proc.wait()
        if current is not None and current not in results:  # the worker died in this case
            err = proc.stderr.read()[-500:]
            results[current] = ("FAIL-crash", f"the worker died (exit {proc.returncode}): {err}")
        done = max(results) + 1 if results else 0
        if current is None and done < n_cases and proc.returncode != 0:
            results[done] = ("FAIL-crash", f"worker exit {proc.returncode}: {proc.stderr.read()[-500:]}")
            done += 1
        start = done
    return results
