// Small canvas charts: lines over epochs (linear or log y) and a 2-D scatter with hover.

export const PALETTE = [
  "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
  "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
];

function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const ticks = [];
  for (let i = Math.ceil(lo / step - 1e-9); i * step <= hi + step * 1e-9; i++) {
    ticks.push(Number((i * step).toPrecision(12))); // 2, not 1.9999999999999998
  }
  return ticks;
}

export function formatNumber(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(3);
  return v.toPrecision(4).replace(/\.?0+$/, "");
}

function setupCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 300;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

/** Lines of `{name, points: [[x, y], ...], color}` with axes, a legend and a hover readout. */
export class LineChart {
  constructor(canvas, { xLabel = "epoch" } = {}) {
    this.canvas = canvas;
    this.xLabel = xLabel;
    this.series = [];
    this.logY = false;
    this.hoverX = null;
    this.onDraw = null; // called after each draw (the page records when points showed)
    this.pending = false;
    canvas.addEventListener("mousemove", (e) => {
      this.hoverX = e.offsetX;
      this.schedule();
    });
    canvas.addEventListener("mouseleave", () => {
      this.hoverX = null;
      this.schedule();
    });
    new ResizeObserver(() => this.schedule()).observe(canvas);
  }

  set(series, { logY = this.logY } = {}) {
    this.series = series;
    this.logY = logY;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  pointCount() {
    return this.series.reduce((n, s) => n + s.points.length, 0);
  }

  draw() {
    const { ctx, width, height } = setupCanvas(this.canvas);
    const pad = { left: 64, right: 16, top: 28, bottom: 40 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const ty = (y) => (this.logY ? Math.log10(y) : y);
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const s of this.series) {
      for (const [x, y] of s.points) {
        if (y === null || !Number.isFinite(y) || (this.logY && y <= 0)) continue;
        x0 = Math.min(x0, x); x1 = Math.max(x1, x);
        y0 = Math.min(y0, ty(y)); y1 = Math.max(y1, ty(y));
      }
    }
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = "#555";
    if (!Number.isFinite(x0)) {
      ctx.fillText(this.series.length ? "no points yet" : "no metric selected", pad.left, pad.top + 20);
      this.canvas.dataset.points = "0";
      this.onDraw?.(this);
      return;
    }
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { const d = Math.abs(y0) * 0.05 || 1; y0 -= d; y1 += d; }
    const margin = (y1 - y0) * 0.05;
    y0 -= margin; y1 += margin;
    const sx = (x) => pad.left + ((x - x0) / (x1 - x0)) * plotW;
    const sy = (y) => pad.top + (1 - (ty(y) - y0) / (y1 - y0)) * plotH;

    // axes and grid
    ctx.strokeStyle = "#e3e3e3";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    // Log scale: powers of ten over several decades, else round values placed on the log axis.
    const yTicks = !this.logY
      ? niceTicks(y0, y1)
      : y1 - y0 >= 2
        ? niceTicks(Math.floor(y0), Math.ceil(y1), Math.min(6, Math.ceil(y1) - Math.floor(y0))).filter((v) => Number.isInteger(v) && v >= y0 && v <= y1)
        : niceTicks(10 ** y0, 10 ** y1, 5).filter((v) => v > 0).map(Math.log10).filter((v) => v >= y0 && v <= y1);
    for (const t of yTicks) {
      const py = pad.top + (1 - (t - y0) / (y1 - y0)) * plotH;
      ctx.beginPath(); ctx.moveTo(pad.left, py); ctx.lineTo(pad.left + plotW, py); ctx.stroke();
      ctx.fillText(this.logY ? formatNumber(10 ** t) : formatNumber(t), pad.left - 6, py);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of niceTicks(x0, x1, 8).filter((v) => Number.isInteger(v))) {
      const px = sx(t);
      ctx.beginPath(); ctx.moveTo(px, pad.top); ctx.lineTo(px, pad.top + plotH); ctx.stroke();
      ctx.fillText(formatNumber(t), px, pad.top + plotH + 6);
    }
    ctx.fillText(this.xLabel + (this.logY ? "   (log y)" : ""), pad.left + plotW / 2, pad.top + plotH + 22);
    ctx.strokeStyle = "#999";
    ctx.strokeRect(pad.left, pad.top, plotW, plotH);

    // lines (and a dot per point when there are few)
    this.series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.lineWidth = 1.8;
      ctx.beginPath();
      let pen = false;
      for (const [x, y] of s.points) {
        if (y === null || !Number.isFinite(y) || (this.logY && y <= 0)) { pen = false; continue; }
        if (pen) ctx.lineTo(sx(x), sy(y)); else ctx.moveTo(sx(x), sy(y));
        pen = true;
      }
      ctx.stroke();
      if (s.points.length <= 60) {
        for (const [x, y] of s.points) {
          if (y === null || !Number.isFinite(y) || (this.logY && y <= 0)) continue;
          ctx.beginPath(); ctx.arc(sx(x), sy(y), 2.5, 0, 2 * Math.PI); ctx.fill();
        }
      }
    });

    // legend
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    let lx = pad.left;
    this.series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      const label = s.name;
      const w = ctx.measureText(label).width;
      ctx.fillStyle = color;
      ctx.fillRect(lx, 11, 12, 3); // above the plot
      ctx.fillStyle = "#222";
      ctx.fillText(label, lx + 16, 13);
      lx += w + 30;
    });

    // hover: the values at the nearest x
    if (this.hoverX !== null && this.hoverX >= pad.left && this.hoverX <= pad.left + plotW) {
      const x = x0 + ((this.hoverX - pad.left) / plotW) * (x1 - x0);
      const lines = [];
      let best = null;
      for (const s of this.series) {
        let nearest = null;
        for (const p of s.points) if (!nearest || Math.abs(p[0] - x) < Math.abs(nearest[0] - x)) nearest = p;
        if (nearest) { best = best ?? nearest[0]; lines.push(`${s.name}: ${formatNumber(nearest[1])}`); }
      }
      if (best !== null) {
        const px = sx(best);
        ctx.strokeStyle = "#888";
        ctx.setLineDash([3, 3]);
        ctx.beginPath(); ctx.moveTo(px, pad.top); ctx.lineTo(px, pad.top + plotH); ctx.stroke();
        ctx.setLineDash([]);
        lines.unshift(`${this.xLabel} ${formatNumber(best)}`);
        const w = Math.max(...lines.map((l) => ctx.measureText(l).width)) + 12;
        const bx = Math.min(px + 8, width - w - 4);
        ctx.fillStyle = "rgba(255,255,255,0.95)";
        ctx.strokeStyle = "#bbb";
        ctx.fillRect(bx, pad.top + 26, w, lines.length * 16 + 6);
        ctx.strokeRect(bx, pad.top + 26, w, lines.length * 16 + 6);
        ctx.fillStyle = "#222";
        lines.forEach((l, i) => ctx.fillText(l, bx + 6, pad.top + 37 + i * 16));
      }
    }
    this.canvas.dataset.points = String(this.pointCount());
    this.onDraw?.(this);
  }
}

/** A scatter of `xy` (Float32Array [n * 2]) coloured by `groups` (Int32Array [n], -1: none). */
export class Scatter {
  constructor(canvas, tooltip) {
    this.canvas = canvas;
    this.tooltip = tooltip;
    this.xy = new Float32Array(0);
    this.groups = null;
    this.label = () => "";
    this.hover = -1;
    canvas.addEventListener("mousemove", (e) => this.onMove(e));
    canvas.addEventListener("mouseleave", () => { this.tooltip.hidden = true; this.hover = -1; });
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  set(xy, groups, label) {
    this.xy = xy;
    this.groups = groups;
    this.label = label;
    this.grid = null;
    this.draw();
  }

  /** The canvas position (CSS pixels) of point `i`. */
  screenOf(i) {
    return [this.sx(this.xy[2 * i]), this.sy(this.xy[2 * i + 1])];
  }

  draw() {
    const { ctx, width, height } = setupCanvas(this.canvas);
    const n = this.xy.length / 2;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = this.xy[2 * i], y = this.xy[2 * i + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    if (!n) { x0 = y0 = -1; x1 = y1 = 1; }
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    const pad = 16;
    const scale = Math.min((width - 2 * pad) / (x1 - x0), (height - 2 * pad) / (y1 - y0));
    const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    this.sx = (x) => width / 2 + (x - cx) * scale;
    this.sy = (y) => height / 2 - (y - cy) * scale;
    const r = n > 20000 ? 1.5 : n > 5000 ? 2.5 : 3.5;
    ctx.globalAlpha = 0.75;
    for (let i = 0; i < n; i++) {
      const g = this.groups ? this.groups[i] : 0;
      ctx.fillStyle = g < 0 ? "#999" : PALETTE[g % PALETTE.length];
      const x = this.sx(this.xy[2 * i]), y = this.sy(this.xy[2 * i + 1]);
      if (n > 5000) ctx.fillRect(x - r / 2, y - r / 2, r, r); // squares: fast for many points
      else { ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill(); }
    }
    ctx.globalAlpha = 1;
    if (this.hover >= 0) {
      const [px, py] = this.screenOf(this.hover);
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.arc(px, py, 6, 0, 2 * Math.PI); ctx.stroke();
    }
    const geometry = `${width}x${height}`;
    if (geometry !== this.geometry) { this.geometry = geometry; this.grid = null; }
    this.canvas.dataset.points = String(n);
  }

  nearest(mx, my) {
    const cell = 12;
    const n = this.xy.length / 2;
    if (!this.grid) {
      this.grid = new Map();
      for (let i = 0; i < n; i++) {
        const key = `${Math.floor(this.sx(this.xy[2 * i]) / cell)},${Math.floor(this.sy(this.xy[2 * i + 1]) / cell)}`;
        let bucket = this.grid.get(key);
        if (!bucket) this.grid.set(key, (bucket = []));
        bucket.push(i);
      }
    }
    const gx = Math.floor(mx / cell), gy = Math.floor(my / cell);
    let best = -1, bestD = 10 * 10;
    for (let dx = -1; dx <= 1; dx++) {
      for (let dy = -1; dy <= 1; dy++) {
        for (const i of this.grid.get(`${gx + dx},${gy + dy}`) ?? []) {
          const [px, py] = this.screenOf(i);
          const d = (px - mx) ** 2 + (py - my) ** 2;
          if (d < bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  onMove(e) {
    const i = this.nearest(e.offsetX, e.offsetY);
    if (i !== this.hover) {
      this.hover = i;
      this.draw();
    }
    if (i < 0) { this.tooltip.hidden = true; return; }
    this.tooltip.hidden = false;
    this.tooltip.textContent = this.label(i);
    this.tooltip.style.left = `${e.offsetX + 14}px`;
    this.tooltip.style.top = `${e.offsetY + 10}px`;
  }
}
