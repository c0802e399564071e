// bertology serve: the page's only script. It draws the heatmaps from the JSON beside each canvas, and
// lets Ctrl+Enter submit the SQL console. Every page works without it.
"use strict";

function drawHeatmap(canvas) {
  const source = document.getElementById(canvas.dataset.source);
  if (!source) return;
  const data = JSON.parse(source.textContent);
  const tokens = data.tokens, map = data.map, n = tokens.length;
  if (!n) return;
  const ctx = canvas.getContext("2d");
  const cell = Math.max(3, Math.min(24, Math.floor(640 / n)));
  const fontSize = Math.min(12, cell - 1);
  const font = `${fontSize}px system-ui, sans-serif`;
  ctx.font = font;
  let label = 0;
  for (const t of tokens) label = Math.max(label, ctx.measureText(t.slice(0, 16)).width);
  label = cell >= 7 ? Math.min(Math.ceil(label) + 8, 120) : 4;
  const size = label + cell * n + 2;
  canvas.width = size;
  canvas.height = size;
  ctx.font = font;
  let max = 0;
  for (const row of map) for (const v of row) if (v > max) max = v;
  max = max || 1;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, size, size);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const v = Math.max(0, map[i][j]) / max;   // white (0) to dark blue (the map's maximum)
      ctx.fillStyle = `rgb(${Math.round(255 - 230 * v)}, ${Math.round(255 - 190 * v)}, ${Math.round(255 - 100 * v)})`;
      ctx.fillRect(label + j * cell, label + i * cell, cell, cell);
    }
  }
  ctx.fillStyle = "#1d2330";
  if (cell >= 7) {
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    tokens.forEach((t, i) => ctx.fillText(t.slice(0, 16), label - 4, label + i * cell + cell / 2));
    ctx.save();
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    tokens.forEach((t, j) => ctx.fillText(t.slice(0, 16), -label + 4, label + j * cell + cell / 2));
    ctx.restore();
  }
  canvas.title = "rows: queries (output tokens), columns: keys (input tokens)";
  canvas.addEventListener("mousemove", (e) => {
    const r = canvas.getBoundingClientRect();
    const scale = canvas.width / r.width;
    const j = Math.floor(((e.clientX - r.left) * scale - label) / cell);
    const i = Math.floor(((e.clientY - r.top) * scale - label) / cell);
    if (i >= 0 && j >= 0 && i < n && j < n) canvas.title = `${tokens[i]} → ${tokens[j]}: ${map[i][j].toFixed(4)}`;
  });
  canvas.dataset.drawn = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("canvas.heatmap").forEach(drawHeatmap);
  const query = document.getElementById("query");
  if (query) {
    query.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) query.form.submit();
    });
  }
});
