// The explain page: as the text changes, ask /api/explain (lstm.v1 Explain as
// JSON) for one unit of one channel of one layer, colour each character by
// it, and show the predictions and the layer's per-token summaries.
"use strict";

const $ = (id) => document.getElementById(id);
const GATES = new Set(["input", "forget", "output", "reset", "update"]); // in [0, 1]
const MAX_TOKENS = 512;
let model = null;
let channels = [];
let pending = null; // the latest request's token: older replies are dropped
let timer = 0;

function colour(value, channel) {
  // Gates: white -> blue by value. Signed channels: red (negative) / blue (positive) by tanh(|v|).
  const strength = GATES.has(channel) ? value : Math.tanh(Math.abs(value));
  const [r, g, b] = GATES.has(channel) || value >= 0 ? [43, 108, 176] : [197, 48, 48];
  const mix = (c) => Math.round(255 + (c - 255) * Math.min(1, Math.max(0, strength)));
  return `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`;
}

function tokenText(token) {
  if (token.text !== undefined && token.text !== "") return token.text;
  return "\u00b7"; // a byte of a longer UTF-8 character
}

function request(extra) {
  const text = $("input").value;
  const layers = [Number($("layer").value || 0)];
  if (model && model.vocab_kind !== "bytes") {
    // Words and subwords: the server's vocabulary tokenizes the text (lstm.v1 Input.text).
    return Object.assign({ input: { text }, layers }, extra);
  }
  const bytes = new TextEncoder().encode(text);
  const start = Math.max(0, bytes.length - MAX_TOKENS);
  const tokens = Array.from(bytes.slice(start));
  return Object.assign({ input: { tokens }, layers }, extra);
}

async function post(body) {
  const reply = await fetch("api/explain", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await reply.json();
  if (!reply.ok) throw new Error(`${data.code}: ${data.message}`);
  return data;
}

function fillSelect(select, values, keep) {
  select.replaceChildren(...values.map((v) => new Option(String(v), String(v))));
  if (values.map(String).includes(keep)) select.value = keep;
}

async function explain() {
  const token = {};
  pending = token;
  const unit = Number($("unit").value || 0);
  const body = request({ unit_range: { start: unit, end: unit + 1 }, top_k: 5 });
  if (channels.length) body.channels = [$("channel").value];
  if (!(body.input.tokens ? body.input.tokens.length : body.input.text.trim().length)) return render(null);
  try {
    const reply = await post(body);
    if (pending === token) render(reply);
  } catch (err) {
    if (pending === token) $("error").textContent = err.message;
  }
}

function render(reply) {
  $("error").textContent = "";
  const view = $("text-view");
  if (!reply) { view.replaceChildren(); $("predictions").replaceChildren(); return; }
  if (!channels.length) {
    channels = reply.available_channels;
    fillSelect($("channel"), channels, channels.includes("c") ? "c" : "h");
    return explain(); // again, now for the chosen channel only
  }
  const layer = reply.layers[0];
  const channel = layer.channels[0];
  $("legend").textContent = GATES.has(channel.name)
    ? "white 0 \u2192 blue 1" : "red negative, blue positive (tanh of the value)";
  view.replaceChildren(...reply.tokens.map((token, t) => {
    const span = document.createElement("span");
    const value = channel.values[t];
    const nl = tokenText(token) === "\n";
    span.className = nl ? "tok nl" : "tok";
    span.textContent = nl ? "\u21b5\n" : tokenText(token);
    span.dataset.value = String(value);
    span.dataset.token = String(token.token);
    span.style.backgroundColor = colour(value, channel.name);
    const next = (token.top || []).slice(0, 3).map((c) => `${JSON.stringify(c.text || "\u00b7")} ${c.prob.toFixed(2)}`);
    span.title = `${channel.name}[${channel.units[0]}] = ${value.toFixed(3)}\nnext: ${next.join(", ")}`;
    return span;
  }));
  renderPredictions(reply.tokens[reply.tokens.length - 1].top || []);
  renderSummaries(layer);
}

function renderPredictions(top) {
  $("predictions").replaceChildren(...top.map((c) => {
    const li = document.createElement("li");
    li.dataset.token = String(c.token);
    li.dataset.prob = String(c.prob);
    const code = document.createElement("code");
    code.textContent = JSON.stringify(c.text || "\u00b7");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(c.prob * 12)}em`;
    const prob = document.createElement("span");
    prob.textContent = c.prob.toFixed(3);
    li.append(code, bar, prob);
    return li;
  }));
}

function spark(svg, values) {
  const max = Math.max(1e-6, ...values);
  const n = Math.max(1, values.length - 1);
  const points = values.map((v, i) => `${(100 * i) / n},${1 - v / max}`).join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#2b6cb0");
  line.setAttribute("stroke-width", "1.5");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.replaceChildren(line);
  svg.dataset.values = JSON.stringify(values);
}

function renderSummaries(layer) {
  const series = { forget: layer.mean_forget || [], input: layer.mean_input || [], change: layer.state_change || [] };
  for (const [name, values] of Object.entries(series)) {
    spark(document.querySelector(`svg[data-summary=${name}]`), values);
    const last = values.length ? values[values.length - 1].toFixed(3) : "n/a";
    document.querySelector(`[data-last=${name}]`).textContent = last;
  }
}

async function findUnits() {
  try {
    const reply = await post(request({ channels: [$("channel").value], top_units: 12, top_k: 0 }));
    const units = reply.layers[0].channels[0].units;
    $("units").replaceChildren(...units.map((u) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = `unit ${u}`;
      b.onclick = () => { $("unit").value = String(u); explain(); };
      return b;
    }));
  } catch (err) {
    $("error").textContent = err.message;
  }
}

async function start() {
  const reply = await fetch("api/model");
  const data = await reply.json();
  if (!reply.ok) { $("model").textContent = `${data.code}: ${data.message}`; return; }
  model = data.model;
  $("model").textContent = `${model.name}: ${model.cell}, ${model.layers} layers \u00d7 ${model.hidden_size} units`;
  fillSelect($("layer"), [...Array(model.layers).keys()], String(model.layers - 1));
  $("unit").max = String(model.hidden_size - 1);
  const later = () => { clearTimeout(timer); timer = setTimeout(explain, 120); };
  $("input").addEventListener("input", later);
  for (const id of ["layer", "channel", "unit"]) $(id).addEventListener("change", explain);
  $("find-units").addEventListener("click", findUnits);
  explain();
}

start();
