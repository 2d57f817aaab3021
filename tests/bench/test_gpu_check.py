"""The GPU check's runner (bench/gpu_check.py): every step under its own limit, a failure or a time-out recorded
and the next step run, the JSON rewritten after each step, the table, and --verify (what CI asks of the dry run).

The steps here are real commands (a Python that exits 3, one that sleeps past its limit); the dry run itself, the
whole check on the CPU, is run by .ci/run and checked with --verify.
"""

from __future__ import annotations

import json
import sys

from bench.gpu_check import OPTIONAL_STEPS, STEPS, Check, StepFailed, run_steps, table, verify


def _check(tmp_path, budget: float = 60.0) -> Check:
    out = tmp_path / "out"
    out.mkdir()
    return Check(out, tmp_path / "work", tmp_path / "data", dry=True, budget_s=budget)


def test_a_failing_or_slow_step_is_recorded_and_the_next_one_runs(tmp_path):
    check = _check(tmp_path)

    def ok(c: Check) -> dict:
        return {"said": c.run([sys.executable, "-c", "print('hello')"], "a greeting").strip()}

    def fails(c: Check) -> dict:
        c.run([sys.executable, "-c", "import sys; print('it broke', file=sys.stderr); sys.exit(3)"], "a broken tool")
        return {}

    def slow(c: Check) -> dict:
        c.run([sys.executable, "-c", "import time; time.sleep(30)"], "a slow tool")
        return {}

    def refuses(c: Check) -> dict:
        raise StepFailed("the figures were out of range")

    steps = {"first": ok, "second": fails, "third": slow, "fourth": refuses, "fifth": ok}
    limits = {"first": 20, "second": 20, "third": 2, "fourth": 20, "fifth": 20}
    results = run_steps(check, steps, limits)
    assert [(r.name, r.status) for r in results] == [
        ("first", "ok"),
        ("second", "failed"),
        ("third", "timeout"),
        ("fourth", "failed"),
        ("fifth", "ok"),
    ]
    assert results[0].figures == {"said": "hello"} and results[2].seconds < 10
    assert "exited 3: it broke" in results[1].error and "ran out of time" in results[2].error
    saved = json.loads((check.out / "gpu_check.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in saved["steps"]] == list(steps) and saved["dry_run"] is True
    assert saved["steps"][1]["commands"][0].endswith("sys.exit(3)'") and saved["steps"][3]["commands"] == []
    log = (check.out / "gpu_check.log").read_text(encoding="utf-8")
    assert "it broke" in log and "[timed out after" in log and "[exit 0]" in log
    printed = table(results).splitlines()
    assert len(printed) == 6 and "timeout" in printed[3] and "it broke" in printed[2]


def test_the_budget_bounds_every_step(tmp_path):
    check = _check(tmp_path, budget=3)

    def slow(c: Check) -> dict:
        c.run([sys.executable, "-c", "import time; time.sleep(30)"], "a slow tool")
        return {}

    results = run_steps(check, {"a": slow, "b": slow}, {"a": 100, "b": 100})
    assert [r.status for r in results] == ["timeout", "timeout"] and sum(r.seconds for r in results) < 10


def test_verify_wants_every_step_present_and_ok(tmp_path, capsys):
    path = tmp_path / "gpu_check.json"

    def write(statuses: dict, dry: bool = True) -> None:
        steps = [
            {"name": n, "status": s, "commands": ["x"], "seconds": 1.0, "figures": {}} for n, s in statuses.items()
        ]
        path.write_text(json.dumps({"dry_run": dry, "total_s": 6.0, "steps": steps}), encoding="utf-8")

    write({name: "ok" for name in STEPS + OPTIONAL_STEPS})
    assert verify(path) == 0
    write({name: "ok" for name in STEPS})  # the dry run always takes the optional steps too
    assert verify(path) == 1
    write({name: "ok" for name in STEPS}, dry=False)  # a GPU run takes them only when asked
    assert verify(path) == 0
    write({**{name: "ok" for name in STEPS}, "heads": "timeout"})
    assert verify(path) == 1 and "heads timeout" in capsys.readouterr().err
    write({name: "ok" for name in STEPS[:-1]})
    assert verify(path) == 1
    path.write_text("{", encoding="utf-8")
    assert verify(path) == 1 and "not a complete gpu_check.json" in capsys.readouterr().err
