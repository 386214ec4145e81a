"""report.html from synthetic inputs: well-formed HTML, existing assets, curves, tables, GIFs."""
import base64
import html.parser
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from configs import base
from sem_repa_jax.eval import colorize, report

_VOID = {"meta", "img", "br", "hr", "link", "input", "rect", "line", "path", "col"}


class _Page(html.parser.HTMLParser):
  """Collects tags and text, and checks every non-void element is closed in order."""

  def __init__(self):
    super().__init__()
    self.stack, self.tags, self.text, self.errors = [], [], [], []

  def handle_starttag(self, tag, attrs):
    self.tags.append((tag, dict(attrs)))
    if tag not in _VOID:
      self.stack.append(tag)

  def handle_startendtag(self, tag, attrs):
    self.tags.append((tag, dict(attrs)))

  def handle_endtag(self, tag):
    if tag in _VOID:
      return
    if not self.stack or self.stack[-1] != tag:
      self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
    else:
      self.stack.pop()

  def handle_data(self, data):
    self.text.append(data)


def _parse(text):
  page = _Page()
  page.feed(text)
  page.close()
  assert not page.errors and not page.stack, (page.errors, page.stack)
  return page


def _metrics_file(path, n=10):
  with open(path, "w") as f:
    for step in range(n):
      rec = {"step": 10 * step, "job": "align", "loss": 1.0 / (step + 1), "loss_structure": 0.5 + 0.1 * step}
      if step >= 5:
        rec["loss_id"] = 0.3
      f.write(json.dumps(rec) + "\n")
    f.write('{"step": 100, "loss": 0.0')             # a writer caught mid-line


def _video(f, h=8, w=12, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (f, h, w, 3), dtype=np.uint8)


def _gif_frames(data):
  with Image.open(io.BytesIO(data)) as im:
    return im.n_frames, im.size


def test_report_from_synthetic_inputs(tmp_path):
  workdir = str(tmp_path / "run")
  metrics_path = str(tmp_path / "metrics.jsonl")
  _metrics_file(metrics_path)
  depth = np.random.default_rng(1).uniform(1, 3, (5, 8, 12))
  videos = {"sample": _video(5), "truth": _video(5, seed=2), "long": _video(9, seed=3)}
  sections = [
      report.Notes("Trains tiny modules on synthetic clips.\n\n- shows: the plumbing works\n- does not show: quality <&>"),
      report.LossCurves(metrics_path, ["loss", "loss_structure", "loss_id", "loss_absent"], smoothing=0.5),
      report.VideoGrid([("clip 0", [videos["sample"], videos["truth"]]), ("clip 1", videos["long"])],
                       column_labels=["sample", "ground truth"]),
      report.VideoGrid([("clip 0", [colorize.colorize_depth(depth), colorize.colorize_depth(depth[:, ::-1])])],
                       title="Depth", column_labels=["alignment module", "teacher"], strip_frames=3),
      report.MetricsTable({"clip 0": {"psnr": np.float32(21.123456), "ssim": 0.7123456},
                           "clip 1": {"ssim": 0.5}, "steps": 200}),
      report.ConfigBlock(base.get_config().to_json_best_effort()),
  ]
  path = report.write_report(workdir, title="Demo <report>", sections=sections)
  assert path == os.path.join(workdir, "report.html")
  assert not [n for n in os.listdir(workdir) + os.listdir(os.path.join(workdir, "report_assets"))
              if n.endswith(".tmp")]
  text = open(path).read()
  page = _parse(text)
  joined = " ".join(page.text)

  # Images: each exists; GIFs decode with the videos' frame counts and sizes.
  srcs = [a["src"] for t, a in page.tags if t == "img"]
  assert len(srcs) == 2 * 5                                 # five videos, a GIF and a strip each
  for src in srcs:
    assert src.startswith("report_assets/") and os.path.isfile(os.path.join(workdir, src)), src
  gifs = [s for s in srcs if s.endswith(".gif")]
  counts = [_gif_frames(open(os.path.join(workdir, s), "rb").read()) for s in gifs]
  assert counts == [(5, (12, 8)), (5, (12, 8)), (9, (12, 8)), (5, (12, 8)), (5, (12, 8))]
  strip = np.asarray(Image.open(os.path.join(workdir, [s for s in srcs if s.endswith(".png")][3])))
  assert strip.shape == (8, 3 * 12 + 2 * 2, 3)              # depth strip: 3 of 5 frames, 2-px gaps

  # Curves: one SVG per key with data; raw and smoothed paths with one point per record.
  svgs = [a for t, a in page.tags if t == "svg"]
  assert [s["aria-label"] for s in svgs] == ["loss", "loss_structure", "loss_id"]
  paths = [a["d"] for t, a in page.tags if t == "path"]
  assert len(paths) == 6
  points = [np.array(re.findall(r"([\d.]+) ([\d.]+)", d), float) for d in paths]
  assert [len(p) for p in points] == [10, 10, 10, 10, 5, 5]
  raw = points[2]                                           # loss_structure: linear in step and value
  values = 0.5 + 0.1 * np.arange(10)
  for coord, target in ((raw[:, 0], np.arange(10) * 10.0), (raw[:, 1], values)):
    fit = np.polyfit(target, coord, 1)
    np.testing.assert_allclose(np.polyval(fit, target), coord, atol=0.01)
  assert np.all(np.diff(raw[:, 1]) < 0)                     # larger values are drawn higher
  assert "finite values of loss_absent" in joined

  # Table, config, notes; escaping of user text.
  assert "21.12" in joined and "0.7123" in joined and "200" in joined
  assert '"seed": 0' in joined and "<details>" in text
  assert "quality <&>" in joined and "quality &lt;&amp;&gt;" in text
  assert "Demo <report>" in joined


def test_inline_assets_and_errors_write_nothing(tmp_path):
  video = _video(5)
  path = report.write_report(str(tmp_path / "a"), title="t", inline_assets=True,
                             sections=[report.VideoGrid([("v", video)])])
  assert os.listdir(tmp_path / "a") == ["report.html"]
  srcs = [a["src"] for t, a in _parse(open(path).read()).tags if t == "img"]
  assert srcs[0].startswith("data:image/gif;base64,")
  assert _gif_frames(base64.b64decode(srcs[0].split(",", 1)[1])) == (5, (12, 8))

  bad = tmp_path / "bad"
  with pytest.raises(ValueError, match=r"VideoGrid 'Samples' row 'float clip' video 0: expected uint8"):
    report.write_report(str(bad), title="t", sections=[
        report.VideoGrid([("ok", video)]), report.VideoGrid([("float clip", video / 255.0)])])
  assert not bad.exists()
  metrics = tmp_path / "m.jsonl"
  metrics.write_text('{"step": 1, "loss": 1}\nnot json\n{"step": 2, "loss": 1}\n')
  with pytest.raises(ValueError, match=r"m.jsonl:2: not a JSON object"):
    report.write_report(str(bad), title="t", sections=[report.LossCurves(str(metrics), ["loss"])])
  with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
    report.write_report(str(bad), title="t", sections=[report.LossCurves(str(tmp_path / "nope.jsonl"), ["loss"])])
  with pytest.raises(ValueError, match=r"value of 'a/value' has shape \(2,\); expected a scalar"):
    report.write_report(str(bad), title="t", sections=[report.MetricsTable({"a": np.zeros(2)})])
  with pytest.raises(TypeError, match="report section 0 is a dict"):
    report.write_report(str(bad), title="t", sections=[{"x": 1}])
  assert not bad.exists()
