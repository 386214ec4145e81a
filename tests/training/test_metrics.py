"""metrics.jsonl and TensorBoard across a kill and resume: one point per step, a torn last line
(a kill mid-write) dropped with a warning, any other corrupt line an error naming the file."""
import json
import os

import struct

import pytest
from tensorboardX.proto.event_pb2 import Event, SessionLog

from sem_repa_jax.training.checkpoint import Checkpointer
from sem_repa_jax.training.metrics import MetricsWriter


def _steps(path):
  with open(path) as f:
    return [json.loads(l)["step"] for l in f if l.strip()]


def test_resume_drops_a_torn_last_line_and_later_steps(tmp_path):
  w = MetricsWriter(str(tmp_path), 0, tensorboard=False)
  for step in (1, 2, 3, 4):
    w.write(step, {"loss": 1.0 / step})
  with open(w.path, "a") as f:
    f.write('{"loss": 0.19, "st')                 # killed while writing step 5
  MetricsWriter(str(tmp_path), 2, tensorboard=False).write(3, {"loss": 0.3})
  assert _steps(w.path) == [1, 2, 3]


def test_a_corrupt_line_before_the_end_is_an_error_naming_the_file(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match=rf"{path}: line 2 is not JSON"):
    MetricsWriter(str(tmp_path), 1, tensorboard=False)


def _events(folder):
  """Every Event of the TFRecord event files in `folder`, file by file in write order."""
  files = []
  for name in os.listdir(folder):
    with open(os.path.join(folder, name), "rb") as f:
      data = f.read()
    events, i = [], 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      events.append(Event.FromString(data[i + 12:i + 12 + n]))
      i += 12 + n + 4
    files.append(events)
  return [e for events in sorted(files, key=lambda ev: ev[0].wall_time) for e in events]


def _as_tensorboard_shows(events):
  """TensorBoard's rule: a SessionLog.START at step s hides the earlier events of steps >= s."""
  shown = []
  for e in events:
    if e.HasField("session_log") and e.session_log.status == SessionLog.START:
      shown = [(s, v) for s, v in shown if s < e.step]
    for value in e.summary.value:
      if value.tag == "loss":
        shown.append((e.step, value.simple_value))
  return shown


def test_tensorboard_shows_each_step_once_after_resume(tmp_path):
  w = MetricsWriter(str(tmp_path), 0)
  for step in (1, 2, 3, 4):
    w.write(step, {"loss": float(step)})
  w.close()
  w = MetricsWriter(str(tmp_path), 2)             # resumed from the checkpoint of step 2
  for step in (3, 4):
    w.write(step, {"loss": 10.0 * step})
  w.close()
  events = _events(os.path.join(tmp_path, "tensorboard"))
  assert sum(e.session_log.status == SessionLog.START and e.step == 3 for e in events) == 1
  assert _as_tensorboard_shows(events) == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_keeping_no_checkpoint_is_refused(tmp_path):
  with pytest.raises(ValueError, match="checkpoint.keep = 0: expected at least 1"):
    Checkpointer(str(tmp_path), keep=0)
