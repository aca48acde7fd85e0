// Gaze page: one text → label, scores, the text as typed shaded word by word (and its tokens) by an
// attribution or by rollout, and a layer × head grid of maps; the shaded tokens download as SVG or PNG. Plain JS, no dependencies: everything is served
// by the service itself.
"use strict";

const $ = (id) => document.getElementById(id);
const SPECIAL = new Set(["[CLS]", "[SEP]", "[PAD]"]);
// weights: one value per token for each shading method fetched so far ("rollout" or an attribution).
// words: the text's words ({start, end, tokens}); wordWeights: one value per word for each method fetched.
const state = {
  text: "", label: "", score: 0, tokens: [], maps: null, weights: {}, words: [], wordWeights: {},
  selected: null, hover: null, target: null, // target: the label the attributions explain
};
const METHOD_NAMES = {
  rollout: "attention rollout from [CLS]",
  integrated_gradients: "integrated gradients",
  attention_gradient: "attention × gradient",
  gradient_x_input: "gradient × input",
};
const FOR = [47, 91, 211]; // the accent blue: attention, or an attribution in favour of the label
const AGAINST = [200, 60, 40]; // red: an attribution against it

// A short viridis ramp: perceptually ordered, readable for colour-blind viewers.
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function color(v) {
  const x = Math.max(0, Math.min(1, v)) * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const f = x - i;
  return RAMP[i].map((c, k) => Math.round(c + f * (RAMP[i + 1][k] - c)));
}

async function post(body) {
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`; // a server with GAZE_API_KEY refuses the model's routes without it
  const response = await fetch("../classify", { method: "POST", headers, body: JSON.stringify(body) });
  const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return { prediction: answer.predictions[0], time: response.headers.get("x-total-time") };
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
    const method = $("shading").value;
    const attribution = method === "rollout" ? "none" : method;
    const [full, shaded] = await Promise.all([
      post({ texts: [text], attention: "all" }),
      post({ texts: [text], attention: "rollout", attribution }),
    ]);
    Object.assign(state, { text, label: full.prediction.label, score: full.prediction.score });
    state.target = full.prediction.label;
    state.tokens = full.prediction.tokens;
    state.maps = full.prediction.attention.values; // [L][H][T][T]
    state.weights = { rollout: shaded.prediction.attention.values }; // [T]
    state.words = shaded.prediction.words;
    state.wordWeights = { rollout: state.words.map((w) => w.weight) };
    if (shaded.prediction.attribution) {
      state.weights[method] = shaded.prediction.attribution.values; // [T]
      state.wordWeights[method] = state.words.map((w) => w.attribution);
    }
    state.selected = null;
    state.hover = null;
    render(full.prediction);
    status.textContent = `${state.tokens.length} tokens · ${full.time} ms`;
  } catch (error) {
    $("result").hidden = true; // never an earlier text's result under this one's error
    status.className = "error";
    status.textContent = error.message;
  } finally {
    $("classify").disabled = false;
  }
}

function render(prediction) {
  $("result").hidden = false;
  const multi = Array.isArray(prediction.labels); // a multi-label model: the set of labels at 0.5 or more
  $("label-caption").textContent = multi ? "labels (score ≥ 0.5)" : "label";
  $("label").textContent = multi ? prediction.labels.join(", ") || "none" : prediction.label;
  $("score").textContent = multi ? "" : prediction.score.toFixed(3);
  const target = $("target");
  target.replaceChildren(...Object.keys(prediction.scores).map((label) => new Option(label, label)));
  target.value = state.target;
  const scores = $("scores");
  scores.replaceChildren();
  for (const [label, p] of Object.entries(prediction.scores)) {
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    bar.append(fill);
    scores.append(text("span", label), bar, text("span", p.toFixed(3)));
    if (multi) {
      bar.classList.add("threshold"); // a mark at 0.5: the label applies from there
      bar.classList.toggle("applies", prediction.labels.includes(label));
    }
  }
  $("truncated").hidden = !prediction.truncated;
  renderWords();
  renderTokens();
  renderGrid();
  $("zoom").hidden = true;
}

function text(tag, content) {
  const el = document.createElement(tag);
  el.textContent = content;
  return el;
}

// The text as typed: each word (its pieces together) a span, the characters between words as they were.
// The server's offsets count code points; a JS string indexes UTF-16 units (an emoji is two).
function renderWords() {
  const box = $("words");
  box.replaceChildren();
  const chars = Array.from(state.text);
  const slice = (start, end) => chars.slice(start, end).join("");
  let at = 0;
  for (const word of state.words) {
    box.append(document.createTextNode(slice(at, word.start)));
    const span = text("span", slice(word.start, word.end));
    span.className = "word";
    box.append(span);
    at = word.end;
  }
  box.append(document.createTextNode(slice(at)));
}

// Tokens: shaded by the picked method, or, while one is hovered, by where that token attends.
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

// What the tokens show now: where the hovered token attends, else the picked method's weights.
function shading() {
  if (state.hover !== null) {
    const where = state.selected ? `layer ${state.selected[0] + 1}, head ${state.selected[1] + 1}` : "all layers and heads";
    return {
      name: "attention", weights: attendsFrom(state.hover),
      caption: `shaded by where “${state.tokens[state.hover]}” attends (${where})`,
    };
  }
  const method = $("shading").value;
  const signed = (state.weights[method] || []).some((w) => w < 0); // attention × gradient never is
  const caption = method === "rollout"
    ? `shaded by ${METHOD_NAMES.rollout}`
    : `shaded by ${METHOD_NAMES[method]} for “${state.target}”` + (signed ? ": blue for it, red against" : "");
  return { name: method, weights: state.weights[method], caption };
}

// Each token's (or word's) colour: |weight| relative to the largest among the real ones (specials left out).
function shades(weights, special = (j) => SPECIAL.has(state.tokens[j])) {
  const top = Math.max(...weights.filter((_, j) => !special(j)).map(Math.abs)) || 1;
  return weights.map((w) => {
    const alpha = Math.min(1, Math.abs(w) / top);
    return { rgb: w < 0 ? AGAINST : FOR, alpha, light: alpha > 0.55 };
  });
}

// The legend under the text: what blue (and, for a signed attribution, red) mean now.
function showShadeLegend(name, weights) {
  const signed = weights.some((w) => w < 0);
  $("legend-for").textContent = name === "attention" || name === "rollout" ? "attention" : `for “${state.target}”`;
  $("legend-against-part").hidden = !signed;
}

function shadeTokens() {
  const { name, weights, caption } = shading();
  if (!weights) return; // an attribution still on its way
  showShadeLegend(name, weights);
  shadeWords();
  paint("#tokens .token", shades(weights), weights, name);
  document.querySelectorAll("#tokens .token").forEach((span, j) => span.classList.toggle("active", j === state.hover));
  $("token-caption").textContent = `${caption}; hover a token below to see where it attends`;
}

// Words: by the picked method (a word's pieces summed, as the server sums them).
function shadeWords() {
  const method = $("shading").value;
  const weights = state.wordWeights[method];
  if (!weights) return;
  paint("#words .word", shades(weights, () => false), weights, METHOD_NAMES[method]);
}

// The spans of `selector`, each in its colour, its weight in its tooltip.
function paint(selector, colours, weights, name) {
  document.querySelectorAll(selector).forEach((span, j) => {
    const { rgb, alpha, light } = colours[j];
    span.style.background = `rgba(${rgb.join(", ")}, ${alpha.toFixed(3)})`;
    span.style.color = light ? "#fff" : "";
    span.title = `${name}: ${weights[j].toFixed(4)}`;
  });
}

// Another method picked: fetch its weights once per text, then re-shade.
async function changeShading() {
  const method = $("shading").value;
  if (!state.tokens.length) return;
  const status = $("status");
  if (!(method in state.weights)) {
    status.className = "";
    status.textContent = `Computing ${METHOD_NAMES[method]}…`;
    try {
      const body = { texts: [state.text], attention: "none", attribution: method, target: state.target };
      const { prediction, time } = await post(body);
      state.weights[method] = prediction.attribution.values;
      state.wordWeights[method] = prediction.words.map((w) => w.attribution);
      status.textContent = `${state.tokens.length} tokens · ${METHOD_NAMES[method]} in ${time} ms`;
    } catch (error) {
      status.className = "error";
      status.textContent = error.message;
      return;
    }
  }
  if ($("shading").value === method) shadeTokens();
}

// The shaded tokens as an SVG document, built from the state (what the page shows now); null while the
// picked method's weights are still on their way.
function viewSvg() {
  const { weights, caption } = shading();
  if (!weights) return null;
  const colours = shades(weights);
  const font = 14, pad = 4, lineHeight = 26, width = 900, left = 16;
  const measure = document.createElement("canvas").getContext("2d");
  measure.font = `${font}px monospace`;
  const boxes = [];
  let x = left, y = 64;
  state.tokens.forEach((token, j) => {
    const w = measure.measureText(token).width + 2 * pad;
    if (x + w > width - left && x > left) [x, y] = [left, y + lineHeight];
    boxes.push({ token, x, y, w, ...colours[j] });
    x += w + 3;
  });
  const height = y + lineHeight;
  const escape = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="24" font-family="sans-serif" font-size="16" fill="#1d2230">` +
      `${escape($("label").textContent)} ${escape($("score").textContent)}</text>`,
    `<text x="${left}" y="44" font-family="sans-serif" font-size="12" fill="#6b7285">${escape(caption)}</text>`,
  ];
  for (const b of boxes) {
    parts.push(
      `<rect x="${b.x.toFixed(1)}" y="${b.y}" width="${b.w.toFixed(1)}" height="${lineHeight - 4}" rx="4" ` +
        `fill="rgb(${b.rgb.join(",")})" fill-opacity="${b.alpha.toFixed(3)}"/>`,
      `<text x="${(b.x + pad).toFixed(1)}" y="${b.y + lineHeight / 2 + 2}" font-family="monospace" ` +
        `font-size="${font}" fill="${b.light ? "#ffffff" : "#1d2230"}">${escape(b.token)}</text>`,
    );
  }
  parts.push("</svg>");
  return { text: parts.join("\n"), width, height };
}

function save(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

function downloadSvg() {
  const svg = viewSvg();
  if (svg) save(new Blob([svg.text], { type: "image/svg+xml" }), "gaze-tokens.svg");
}

// PNG: the same SVG, drawn on a canvas at twice its size.
async function downloadPng() {
  const svg = viewSvg();
  if (!svg) return;
  const image = new Image();
  image.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg.text);
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = 2 * svg.width;
  canvas.height = 2 * svg.height;
  const ctx = canvas.getContext("2d");
  ctx.scale(2, 2);
  ctx.drawImage(image, 0, 0);
  canvas.toBlob((blob) => save(blob, "gaze-tokens.png"), "image/png");
}

function setHover(i) {
  state.hover = i;
  shadeTokens();
  drawGrid();
  if (!$("zoom").hidden) drawZoom();
}

// The grid: one small canvas per (layer, head), one pixel per weight, scaled by CSS.
// The maps' colour scale: the ramp drawMap uses, from weight 0 to 1 (by √weight, as the maps).
function drawMapScale() {
  const canvas = $("map-scale");
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < canvas.width; x++) {
    ctx.fillStyle = `rgb(${color(x / (canvas.width - 1)).join(",")})`;
    ctx.fillRect(x, 0, 1, canvas.height);
  }
}

function renderGrid() {
  drawMapScale();
  const grid = $("grid");
  grid.replaceChildren();
  const heads = state.maps[0].length;
  grid.style.gridTemplateColumns = `max-content repeat(${heads}, minmax(${heads > 6 ? 40 : 60}px, 150px))`;
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
$("shading").addEventListener("change", changeShading);
$("target").addEventListener("change", () => {
  // Another label to explain: the attributions are fetched again for it (rollout does not depend on it).
  state.target = $("target").value;
  state.weights = { rollout: state.weights.rollout };
  state.wordWeights = { rollout: state.wordWeights.rollout };
  changeShading();
});
$("download-svg").addEventListener("click", downloadSvg);
$("download-png").addEventListener("click", downloadPng);
$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) classify();
});
