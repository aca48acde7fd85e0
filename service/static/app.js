// Gaze page: one text → label, scores, tokens shaded by rollout, and a layer × head grid of maps.
// Plain JS, no dependencies: everything is served by the service itself.
"use strict";

const $ = (id) => document.getElementById(id);
const SPECIAL = new Set(["[CLS]", "[SEP]", "[PAD]"]);
const state = { tokens: [], maps: null, rollout: null, selected: null, hover: null };

// A short viridis ramp: perceptually ordered, readable for colour-blind viewers.
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function color(v) {
  const x = Math.max(0, Math.min(1, v)) * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const f = x - i;
  return RAMP[i].map((c, k) => Math.round(c + f * (RAMP[i + 1][k] - c)));
}

async function post(texts, attention) {
  const response = await fetch("../classify", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ texts, attention }),
  });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return { prediction: body.predictions[0], time: response.headers.get("x-total-time") };
}

async function classify() {
  const text = $("text").value;
  const status = $("status");
  status.className = "";
  if (!text.trim()) {
    status.textContent = "Type a text first.";
    return;
  }
  $("classify").disabled = true;
  status.textContent = "Classifying…";
  try {
    const [full, rolled] = await Promise.all([post([text], "all"), post([text], "rollout")]);
    state.tokens = full.prediction.tokens;
    state.maps = full.prediction.attention.values; // [L][H][T][T]
    state.rollout = rolled.prediction.attention.values; // [T]
    state.selected = null;
    state.hover = null;
    render(full.prediction);
    status.textContent = `${state.tokens.length} tokens · ${full.time} ms`;
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  } finally {
    $("classify").disabled = false;
  }
}

function render(prediction) {
  $("result").hidden = false;
  $("label").textContent = prediction.label;
  $("score").textContent = prediction.score.toFixed(3);
  const scores = $("scores");
  scores.replaceChildren();
  for (const [label, p] of Object.entries(prediction.scores)) {
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    bar.append(fill);
    scores.append(text("span", label), bar, text("span", p.toFixed(3)));
  }
  $("truncated").hidden = !prediction.truncated;
  renderTokens();
  renderGrid();
  $("zoom").hidden = true;
}

function text(tag, content) {
  const el = document.createElement(tag);
  el.textContent = content;
  return el;
}

// Tokens: shaded by rollout, or, while one is hovered, by where that token attends.
function renderTokens() {
  const box = $("tokens");
  box.replaceChildren();
  state.tokens.forEach((token, i) => {
    const span = text("span", token);
    span.className = "token" + (SPECIAL.has(token) ? " special" : "");
    span.dataset.index = i;
    span.addEventListener("mouseenter", () => setHover(i));
    span.addEventListener("mouseleave", () => setHover(null));
    box.append(span);
  });
  shadeTokens();
}

function attendsFrom(i) {
  // The selected map's row, or the row averaged over every layer and head.
  if (state.selected) return state.maps[state.selected[0]][state.selected[1]][i];
  const t = state.tokens.length;
  const row = new Array(t).fill(0);
  let n = 0;
  for (const layer of state.maps) for (const head of layer) {
    head[i].forEach((v, j) => (row[j] += v));
    n += 1;
  }
  return row.map((v) => v / n);
}

function shadeTokens() {
  const weights = state.hover === null ? state.rollout : attendsFrom(state.hover);
  const top = Math.max(...weights.filter((_, j) => !SPECIAL.has(state.tokens[j]))) || 1;
  document.querySelectorAll("#tokens .token").forEach((span, j) => {
    const v = weights[j] / top;
    span.style.background = `rgba(47, 91, 211, ${Math.min(1, v).toFixed(3)})`;
    span.style.color = v > 0.55 ? "#fff" : "";
    span.title = `${state.hover === null ? "rollout" : "attention"}: ${weights[j].toFixed(4)}`;
    span.classList.toggle("active", j === state.hover);
  });
  const where = state.selected ? `layer ${state.selected[0] + 1}, head ${state.selected[1] + 1}` : "all layers and heads";
  $("token-caption").textContent = state.hover === null
    ? "shaded by attention rollout from [CLS]; hover a token to see where it attends"
    : `shaded by where “${state.tokens[state.hover]}” attends (${where})`;
}

function setHover(i) {
  state.hover = i;
  shadeTokens();
  drawGrid();
  if (!$("zoom").hidden) drawZoom();
}

// The grid: one small canvas per (layer, head), one pixel per weight, scaled by CSS.
function renderGrid() {
  const grid = $("grid");
  grid.replaceChildren();
  const heads = state.maps[0].length;
  grid.style.gridTemplateColumns = `max-content repeat(${heads}, minmax(60px, 150px))`;
  grid.append(text("span", ""));
  for (let h = 0; h < heads; h++) grid.append(axis(`head ${h + 1}`));
  state.maps.forEach((layer, l) => {
    grid.append(axis(`layer ${l + 1}`));
    layer.forEach((_, h) => {
      const canvas = document.createElement("canvas");
      canvas.dataset.layer = l;
      canvas.dataset.head = h;
      canvas.title = `layer ${l + 1}, head ${h + 1}: click to enlarge`;
      canvas.addEventListener("click", () => openZoom(l, h));
      grid.append(canvas);
    });
  });
  drawGrid();
}

function axis(label) {
  const el = text("span", label);
  el.className = "axis";
  return el;
}

function drawGrid() {
  document.querySelectorAll("#grid canvas").forEach((canvas) => {
    const l = +canvas.dataset.layer, h = +canvas.dataset.head;
    drawMap(canvas, state.maps[l][h], 1, state.hover);
    canvas.classList.toggle("selected", !!state.selected && state.selected[0] === l && state.selected[1] === h);
  });
}

function drawMap(canvas, map, cell, highlightRow) {
  const t = map.length;
  canvas.width = t * cell;
  canvas.height = t * cell;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(t, t);
  for (let i = 0; i < t; i++) {
    for (let j = 0; j < t; j++) {
      const [r, g, b] = color(Math.sqrt(map[i][j])); // sqrt: weights of 1/T stay visible
      const k = 4 * (i * t + j);
      const dim = highlightRow !== null && highlightRow !== undefined && i !== highlightRow ? 0.35 : 1;
      image.data[k] = r * dim + 255 * (1 - dim);
      image.data[k + 1] = g * dim + 255 * (1 - dim);
      image.data[k + 2] = b * dim + 255 * (1 - dim);
      image.data[k + 3] = 255;
    }
  }
  if (cell === 1) {
    ctx.putImageData(image, 0, 0);
  } else {
    const small = document.createElement("canvas");
    small.width = t;
    small.height = t;
    small.getContext("2d").putImageData(image, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(small, 0, 0, t * cell, t * cell);
  }
}

// The enlarged map: token labels on both axes, weights on hover.
const ZOOM = { cell: 0, margin: 0 };
function openZoom(l, h) {
  state.selected = [l, h];
  $("zoom").hidden = false;
  $("zoom-title").textContent = `Layer ${l + 1}, head ${h + 1}`;
  drawGrid();
  drawZoom();
  shadeTokens();
  $("zoom").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

function drawZoom() {
  const [l, h] = state.selected;
  const map = state.maps[l][h];
  const t = map.length;
  const cell = Math.max(8, Math.min(28, Math.floor(640 / t)));
  const ctx0 = document.createElement("canvas").getContext("2d");
  ctx0.font = "12px ui-monospace, monospace";
  const margin = Math.min(140, 12 + Math.max(...state.tokens.map((s) => ctx0.measureText(s).width)));
  Object.assign(ZOOM, { cell, margin });
  const canvas = $("zoom-canvas");
  canvas.width = margin + t * cell;
  canvas.height = margin + t * cell;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const heat = document.createElement("canvas");
  drawMap(heat, map, 1, state.hover);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(heat, margin, margin, t * cell, t * cell);
  ctx.fillStyle = "#1d2230";
  ctx.font = `${Math.min(12, cell)}px ui-monospace, monospace`;
  ctx.textBaseline = "middle";
  state.tokens.forEach((token, i) => {
    ctx.textAlign = "right";
    ctx.fillText(token, margin - 6, margin + (i + 0.5) * cell, margin - 8);
    ctx.save();
    ctx.translate(margin + (i + 0.5) * cell, margin - 6);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    ctx.fillText(token, 0, 0, margin - 8);
    ctx.restore();
  });
}

$("zoom-canvas").addEventListener("mousemove", (event) => {
  const rect = event.target.getBoundingClientRect();
  const scale = event.target.width / rect.width;
  const x = (event.clientX - rect.left) * scale - ZOOM.margin;
  const y = (event.clientY - rect.top) * scale - ZOOM.margin;
  const [i, j] = [Math.floor(y / ZOOM.cell), Math.floor(x / ZOOM.cell)];
  const t = state.tokens.length;
  if (x < 0 || y < 0 || i >= t || j >= t) return;
  const [l, h] = state.selected;
  $("zoom-readout").textContent =
    `“${state.tokens[i]}” → “${state.tokens[j]}”: ${state.maps[l][h][i][j].toFixed(4)}`;
});

$("zoom-close").addEventListener("click", () => {
  $("zoom").hidden = true;
  state.selected = null;
  drawGrid();
  shadeTokens();
});
$("classify").addEventListener("click", classify);
$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) classify();
});
