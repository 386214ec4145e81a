"""workdir/report.html: one self-contained page that shows what a run did.

A report is a title and a list of small typed sections, so each job composes its own:

  write_report(workdir, title="SemanticREPA demo", sections=[
      Notes("What this demo does ..."),
      LossCurves(f"{workdir}/metrics.jsonl", ["loss", "loss_structure", "loss_id"]),
      VideoGrid([("clip 0", [sample, ground_truth])], column_labels=["sample", "ground truth"]),
      MetricsTable({"clip 0": {"psnr": 21.3, "ssim": 0.71}}),
      ConfigBlock(config.to_json_best_effort()),
  ])

The page has inline CSS and inline SVG charts (no matplotlib, no scripts). Videos are animated GIFs
plus PNG strips in workdir/report_assets/ (or base64 data URIs with inline_assets=True). Every
section is rendered in memory first, so a bad input raises before anything is written; then the
assets and the page are each written to a temporary name and renamed.
"""
import base64
import dataclasses
import datetime
import html
import json
import math
import os
import re
from typing import Any, Mapping, Sequence, Union

import numpy as np

from sem_repa_jax.eval import video_io

ASSET_DIR = "report_assets"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
.meta { color: #777; font-size: .85em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.curves { display: flex; flex-wrap: wrap; gap: 1em; }
.curves svg { border: 1px solid #eee; background: #fff; }
img.px { image-rendering: pixelated; }
img.strip { max-width: 100%; height: auto; }
.missing { color: #a33; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
"""


@dataclasses.dataclass(frozen=True)
class LossCurves:
  """One SVG chart per key of a metrics.jsonl file (one JSON object per line).

  x_key: the x axis (the line number where a line lacks it). log_y: log10 y axis (values <= 0 are
  left out). smoothing: weight of an exponential moving average drawn over the raw curve (0: none).
  """
  metrics_path: str
  keys: Sequence[str]
  title: str = "Loss curves"
  x_key: str = "step"
  log_y: bool = False
  smoothing: float = 0.0


@dataclasses.dataclass(frozen=True)
class VideoGrid:
  """Rows of (label, video) or (label, [video, ...]): uint8 (F, H, W, 3) (or (F, H, W) grey) videos,
  shown side by side as animated GIFs, each with a PNG strip of at most strip_frames frames."""
  rows: Sequence[tuple]
  title: str = "Samples"
  column_labels: Sequence[str] = ()
  fps: float = 8.0
  strip_frames: int = 8
  min_display_width: int = 160


@dataclasses.dataclass(frozen=True)
class MetricsTable:
  """{name: value} or {row: {column: value}} (mixed is fine: a plain value goes in column 'value')."""
  metrics: Mapping[str, Any]
  title: str = "Metrics"
  digits: int = 4


@dataclasses.dataclass(frozen=True)
class ConfigBlock:
  """A configuration as collapsible, pretty-printed JSON (a JSON string or a mapping)."""
  config_json: Union[str, Mapping]
  title: str = "Config"


@dataclasses.dataclass(frozen=True)
class Notes:
  """Free text: paragraphs separated by blank lines; lines starting with '- ' become a list."""
  text: str
  title: str = "What this demo does and does not show"


Section = Union[LossCurves, VideoGrid, MetricsTable, ConfigBlock, Notes]


class _Assets:
  """Collects files (name -> bytes) while sections render; returns the src to put in the page."""

  def __init__(self, inline: bool):
    self.inline = inline
    self.files = {}

  def add(self, name: str, data: bytes, mime: str) -> str:
    if self.inline:
      return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    self.files[name] = data
    return f"{ASSET_DIR}/{name}"


def _e(text) -> str:
  return html.escape(str(text), quote=True)


def _slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40] or "x"


# ----------------------------------------------------------------------------------------- curves

def read_metrics(path: str) -> list:
  """The JSON objects of a metrics.jsonl file. A last line without its newline that does not parse
  (a writer caught mid-line) is dropped; any other bad line raises, naming the file and line."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"LossCurves: metrics file {path} does not exist")
  with open(path) as f:
    lines = f.read().split("\n")
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        break
      raise ValueError(f"{path}:{i + 1}: not a JSON object ({e.msg})") from None
    if not isinstance(record, dict):
      raise ValueError(f"{path}:{i + 1}: expected a JSON object, got {type(record).__name__}")
    records.append((i + 1, record))
  return records


def _number(v):
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    return None
  return float(v) if math.isfinite(v) else None


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list:
  span = hi - lo
  raw = span / max(n, 1)
  mag = 10 ** math.floor(math.log10(raw))
  step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
  first = math.ceil(lo / step - 1e-9) * step
  return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
  return f"{v:.4g}"


def _curve_svg(key: str, xs: np.ndarray, ys: np.ndarray, log_y: bool, smoothing: float) -> str:
  width, height, left, right, top, bottom = 420, 240, 62, 14, 26, 36
  pw, ph = width - left - right, height - top - bottom
  smooth = None
  if smoothing > 0:
    smooth = np.empty_like(ys)
    acc = ys[0]
    for i, y in enumerate(ys):
      acc = smoothing * acc + (1 - smoothing) * y
      smooth[i] = acc
  ty = np.log10(ys) if log_y else ys
  x0, x1 = float(xs.min()), float(xs.max())
  y0, y1 = float(ty.min()), float(ty.max())
  if x1 == x0:
    x0, x1 = x0 - 1, x1 + 1
  if y1 == y0:
    pad = abs(y0) * 0.1 or 1.0
    y0, y1 = y0 - pad, y1 + pad
  else:
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
  px = lambda x: left + (x - x0) / (x1 - x0) * pw
  py = lambda y: top + (y1 - y) / (y1 - y0) * ph

  def path(values):
    t = np.log10(values) if log_y else values
    pts = [f"{px(x):.2f} {py(y):.2f}" for x, y in zip(xs, t)]
    return "M " + " L ".join(pts)

  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(key)}">',
           f'<text x="{left}" y="16" font-size="13" font-weight="bold">{_e(key)}</text>',
           f'<text x="{width - right}" y="16" font-size="11" text-anchor="end" fill="#555">'
           f'last {_fmt(float(ys[-1]))}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>']
  yticks = _nice_ticks(y0, y1)
  if log_y and math.floor(y1) - math.ceil(y0) >= 1:   # whole decades once the range spans two
    yticks = list(range(math.ceil(y0), math.floor(y1) + 1))
  for t in yticks:
    label = _fmt(10 ** t) if log_y else _fmt(t)
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.2f}" y2="{py(t):.2f}" stroke="#eee"/>'
                 f'<text x="{left - 4}" y="{py(t) + 4:.2f}" font-size="10" text-anchor="end">{label}</text>')
  for t in _nice_ticks(x0, x1):
    parts.append(f'<text x="{px(t):.2f}" y="{top + ph + 14}" font-size="10" text-anchor="middle">'
                 f'{int(round(t)) if abs(t - round(t)) < 1e-9 and abs(t) < 1e9 else _fmt(t)}</text>')
  if smooth is None:
    parts.append(f'<path d="{path(ys)}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
  else:
    parts.append(f'<path d="{path(ys)}" fill="none" stroke="#1f77b4" stroke-opacity="0.3" stroke-width="1"/>')
    parts.append(f'<path d="{path(smooth)}" fill="none" stroke="#1f77b4" stroke-width="1.8"/>')
  parts.append("</svg>")
  return "".join(parts)


def _render_curves(s: LossCurves, assets: _Assets, index: int) -> str:
  if not 0 <= s.smoothing < 1:
    raise ValueError(f"LossCurves: smoothing must be in [0, 1); got {s.smoothing!r}")
  if isinstance(s.keys, str):
    raise ValueError(f"LossCurves: keys must be a list of names; got the string {s.keys!r}")
  records = read_metrics(s.metrics_path)
  out = ['<div class="curves">']
  for key in s.keys:
    pts = []
    for line_no, r in records:
      y = _number(r.get(key))
      x = _number(r.get(s.x_key, line_no))
      if y is not None and x is not None and (y > 0 or not s.log_y):
        pts.append((x, y))
    if not pts:
      out.append(f'<p class="missing">no {"positive " if s.log_y else ""}finite values of {_e(key)} '
                 f'in {_e(s.metrics_path)}</p>')
      continue
    xs, ys = np.array(pts, np.float64).T
    out.append(_curve_svg(key, xs, ys, s.log_y, s.smoothing))
  out.append("</div>")
  return "".join(out)


# ----------------------------------------------------------------------------------------- videos

def _render_videos(s: VideoGrid, assets: _Assets, index: int) -> str:
  if s.strip_frames < 1:
    raise ValueError(f"VideoGrid {s.title!r}: strip_frames must be >= 1; got {s.strip_frames}")
  rows = []
  for r, row in enumerate(s.rows):
    if not isinstance(row, (tuple, list)) or len(row) != 2:
      raise ValueError(f"VideoGrid {s.title!r}: row {r} must be (label, video) or (label, [videos]); got {row!r:.80}")
    label, videos = row
    videos = list(videos) if isinstance(videos, (list, tuple)) else [videos]
    rows.append((str(label), [video_io.as_rgb_frames(v, f"VideoGrid {s.title!r} row {label!r} video {c}")
                              for c, v in enumerate(videos)]))
  ncol = max((len(v) for _, v in rows), default=0)
  head = ""
  if s.column_labels:
    head = "<tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in s.column_labels) + "</tr>"
  body = []
  for r, (label, videos) in enumerate(rows):
    cells, strips = [], []
    for c, v in enumerate(videos):
      f, h, w, _ = v.shape
      scale = max(1, math.ceil(s.min_display_width / w))
      stem = f"s{index}-{_slug(s.title)}-r{r}-c{c}"
      gif = assets.add(stem + ".gif", video_io.gif_bytes(v, fps=s.fps, name=stem), "image/gif")
      strip = video_io.frame_strip(v, max_frames=s.strip_frames)
      png = assets.add(stem + ".png", video_io.png_bytes(strip, name=stem), "image/png")
      col = s.column_labels[c] if c < len(s.column_labels) else f"video {c}"
      cells.append(f'<td><img class="px" src="{gif}" width="{w * scale}" height="{h * scale}" '
                   f'alt="{_e(label)}, {_e(col)}: {f} frames"></td>')
      strips.append(f'<div>{_e(col)} ({f} frames, strip of {min(f, s.strip_frames)})<br>'
                    f'<img class="px strip" src="{png}" width="{strip.shape[1] * min(scale, 2)}" '
                    f'alt="{_e(label)}, {_e(col)}: frame strip"></div>')
    cells += ["<td></td>"] * (ncol - len(videos))
    body.append(f"<tr><th>{_e(label)}</th>{''.join(cells)}</tr>")
    body.append(f'<tr><td></td><td colspan="{max(ncol, 1)}">{"".join(strips)}</td></tr>')
  return f"<table>{head}{''.join(body)}</table>"


# ---------------------------------------------------------------------------------- tables, text

def _scalar(name: str, v):
  if isinstance(v, np.ndarray) or hasattr(v, "__array__"):
    a = np.asarray(v)
    if a.size != 1:
      raise ValueError(f"MetricsTable: value of {name!r} has shape {a.shape}; expected a scalar")
    v = a.reshape(()).item()
  return v


def _cell(v, digits: int) -> str:
  if isinstance(v, bool) or v is None:
    return f"<td>{_e(v)}</td>"
  if isinstance(v, int):
    return f'<td class="num">{v}</td>'
  if isinstance(v, float):
    return f'<td class="num">{v:.{digits}g}</td>'
  return f"<td>{_e(v)}</td>"


def _render_table(s: MetricsTable, assets: _Assets, index: int) -> str:
  columns, rows = [], []
  for name, value in s.metrics.items():
    values = value if isinstance(value, Mapping) else {"value": value}
    values = {str(k): _scalar(f"{name}/{k}", v) for k, v in values.items()}
    columns += [k for k in values if k not in columns]
    rows.append((name, values))
  head = "<tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>"
  body = "".join(f"<tr><th>{_e(name)}</th>" + "".join(
      _cell(values[c], s.digits) if c in values else "<td></td>" for c in columns) + "</tr>"
      for name, values in rows)
  return f"<table>{head}{body}</table>"


def _render_config(s: ConfigBlock, assets: _Assets, index: int) -> str:
  cfg = s.config_json
  if isinstance(cfg, str):
    try:
      cfg = json.loads(cfg)
    except json.JSONDecodeError as e:
      raise ValueError(f"ConfigBlock {s.title!r}: config_json is not valid JSON ({e})") from None
  text = json.dumps(cfg, indent=2, sort_keys=True, default=str)
  return f"<details><summary>{_e(s.title)} (JSON)</summary><pre>{_e(text)}</pre></details>"


def _render_notes(s: Notes, assets: _Assets, index: int) -> str:
  out = []
  for para in re.split(r"\n\s*\n", s.text.strip()):
    lines = [ln.strip() for ln in para.splitlines() if ln.strip()]
    items = [ln[2:] for ln in lines if ln.startswith("- ")]
    if items and len(items) == len(lines):
      out.append("<ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>")
    elif lines:
      out.append(f"<p>{_e(' '.join(lines))}</p>")
  return "".join(out)


_RENDERERS = {LossCurves: _render_curves, VideoGrid: _render_videos, MetricsTable: _render_table,
              ConfigBlock: _render_config, Notes: _render_notes}


def render_report(*, title: str, sections: Sequence[Section], inline_assets: bool = False):
  """(html text, {asset file name: bytes}); nothing is written."""
  assets = _Assets(inline_assets)
  body = []
  for i, section in enumerate(sections):
    render = _RENDERERS.get(type(section))
    if render is None:
      raise TypeError(f"report section {i} is a {type(section).__name__}; expected one of "
                      f"{', '.join(t.__name__ for t in _RENDERERS)}")
    body.append(f'<section id="s{i}"><h2>{_e(section.title)}</h2>{render(section, assets, i)}</section>')
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
          f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"
          f'<p class="meta">written {now}</p>\n' + "\n".join(body) + "\n</body></html>\n")
  return page, assets.files


def write_report(workdir: str, *, title: str, sections: Sequence[Section], filename: str = "report.html",
                 inline_assets: bool = False) -> str:
  """Writes workdir/filename (and workdir/report_assets/*) and returns the page's path."""
  page, files = render_report(title=title, sections=sections, inline_assets=inline_assets)
  for name, data in files.items():
    video_io.write_bytes(os.path.join(workdir, ASSET_DIR, name), data)
  return video_io.write_bytes(os.path.join(workdir, filename), page.encode("utf-8"))
