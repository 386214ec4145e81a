"""benchmarks/harness.py: turns alternate, the table names the baseline ratio and the load."""
import json

import pytest

from benchmarks import harness


def test_alternate_runs_in_turns_after_warmup():
  calls = []
  res = harness.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                          repeats=3, warmup=1)
  assert calls == ["a", "b"] + ["a", "b"] * 3
  assert set(res) == {"a", "b"} and all(len(t.times) == 3 for t in res.values())
  assert res["a"].min <= res["a"].median <= res["a"].max


def test_table_ratio_and_load_line(tmp_path):
  res = {"jax": harness.Timing([2.0, 2.0, 4.0]), "torch": harness.Timing([1.0, 1.0, 1.0])}
  text = harness.table(res, baseline="torch")
  assert "2.00x" in text and "1.00x" in text and "load average" in text
  out = json.load(open(harness.write_json(str(tmp_path / "r.json"), {"res": res})))
  assert out["res"]["jax"]["median_s"] == 2.0 and "load_average" in out["machine"]


def test_repeats_must_be_positive():
  with pytest.raises(ValueError, match="repeats=0"):
    harness.alternate({"a": lambda: None}, repeats=0)
