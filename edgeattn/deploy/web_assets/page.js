// The page's own script (index.html loads it as a module; the page allows no inline script).
import { EdgeAttn, nested } from "./edgeattn.js";

const $ = (id) => document.getElementById(id);
const check = $("self-check");
let model = null;

function fail(where, err) {
  const message = err && err.message ? err.message : String(err);
  where.textContent = message;
  return message;
}

// Every string from the model (names, dtypes, metadata, vocabulary) goes into the page as text, never as HTML:
// a model whose input is named "<img src=x onerror=...>" shows that name and runs nothing.
function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function code(text) {
  const td = document.createElement("td");
  const c = document.createElement("code");
  c.textContent = text;
  td.append(c);
  return td;
}

function showSpec(meta, streaming) {
  const stateIn = new Set(streaming ? streaming.states.map((s) => s.input) : []);
  const stateOut = new Set(streaming ? streaming.states.map((s) => s.output) : []);
  const rows = [
    ...meta.inputs.map((s) => [stateIn.has(s.name) ? "state in" : "input", s]),
    ...meta.outputs.map((s) => [stateOut.has(s.name) ? "state out" : "output", s]),
  ];
  $("spec").replaceChildren(...rows.map(([kind, s]) => {
    const tr = document.createElement("tr");
    tr.append(cell(kind, "muted"), code(String(s.name)), code(`(${s.shape.join(", ")})`), cell(String(s.dtype), "muted"));
    return tr;
  }));
}

function drawAttention(output) {
  const box = $("attention");
  if (!output) { box.hidden = true; return; }
  const dims = output.dims;
  // The first sample; for (batch, heads, T_q, T_v) the first head; a (batch, time) vector is one row.
  const cols = dims[dims.length - 1];
  const rows = dims.length >= 3 ? dims[dims.length - 2] : 1;
  const values = output.data.slice(0, rows * cols);
  const max = Math.max(...values, 1e-12);
  const canvas = $("heatmap");
  const cell = Math.max(4, Math.min(40, Math.floor(600 / cols)));
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  const ctx = canvas.getContext("2d");
  values.forEach((v, i) => {
    const t = Math.max(0, v) / max;
    ctx.fillStyle = `rgb(${Math.round(255 - 215 * t)}, ${Math.round(255 - 140 * t)}, ${Math.round(255 - 40 * t)})`;
    ctx.fillRect((i % cols) * cell, Math.floor(i / cols) * cell, cell, cell);
  });
  $("attention-shape").textContent = `(${dims.join(", ")})`;
  const peak = values.indexOf(Math.max(...values));
  $("attention-note").textContent =
    (dims.length === 4 ? "sample 0, head 0; rows: queries, columns: keys. " : dims.length === 3 ? "sample 0; rows: queries, columns: keys. " : "sample 0 over time. ") +
    `Largest weight ${values[peak].toFixed(3)} at ${rows > 1 ? `query ${Math.floor(peak / cols)}, key ${peak % cols}` : `step ${peak}`}.`;
  box.hidden = false;
}

// The form's input as JSON, or undefined (and the error shown).
function inputValue() {
  try {
    return JSON.parse($("input").value);
  } catch (err) {
    fail($("error"), new Error(`not valid JSON: ${err.message}`));
    return undefined;
  }
}

async function run() {
  $("error").textContent = "";
  if (!model) { $("error").textContent = "the model did not load (see the self-check above)"; return; }
  if (model.tokenizer) { await runText(); return; }
  if (model.streaming) { await runStream(); return; }
  const value = inputValue();
  if (value === undefined) return;
  try {
    const { outputs, ms } = await model.predict(value);
    const asArrays = Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, nested(v.data, v.dims)]));
    $("result").dataset.outputs = JSON.stringify(asArrays);
    $("result").textContent = Object.entries(asArrays).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join("\n");
    $("timing").textContent = `${ms.toFixed(2)} ms`;
    drawAttention(outputs.attention_weights);
  } catch (err) {
    fail($("error"), err);
  }
}

// A text model: the box holds texts, one per line, tokenized here by Keras's rules (stored in the model).
async function runText() {
  try {
    const { outputs, ms, ids } = await model.predictText($("input").value.split("\n"));
    const asArrays = Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, nested(v.data, v.dims)]));
    $("result").dataset.ids = JSON.stringify(ids);
    $("result").dataset.outputs = JSON.stringify(asArrays);
    $("result").textContent = [`tokens = ${JSON.stringify(ids)}`, ...Object.entries(asArrays).map(([k, v]) => `${k} = ${JSON.stringify(v)}`)].join("\n");
    $("timing").textContent = `${ms.toFixed(2)} ms`;
    drawAttention(outputs.attention_weights);
  } catch (err) {
    fail($("error"), err);
  }
}

// A streaming model (edgeattn.stream): the box holds one sample's sequence, (time, features...) per data input; a new
// EdgeAttn stream() from the initial state takes it one step per push (kind "step") or as one chunk ("stateful").
function describeStream(spec) {
  const states = spec.states.map((s) => s.input);
  const cap = spec.max_steps ? `, caches capped at ${spec.max_steps} steps` : "";
  return `streaming model: ${spec.kind}, ${states.length} state${states.length === 1 ? "" : "s"} (${states.join(", ")})${cap}`;
}

function randomSequence(steps = 8) {
  const sample = {};
  for (const name of model.streaming.inputs) {
    const spec = model.inputs.find((s) => s.name === name);
    const dims = [steps, ...spec.shape.slice(2).map((d) => (typeof d === "number" ? d : 1))];
    const size = dims.reduce((a, b) => a * b, 1);
    const isInt = spec.dtype.startsWith("int") || spec.dtype.startsWith("uint");
    const high = (model.meta.int_high || {})[name] || 2;
    sample[name] = nested(Array.from({ length: size }, () => (isInt ? 1 + Math.floor(Math.random() * (high - 1)) : Math.random())), dims);
  }
  return model.streaming.inputs.length === 1 ? sample[model.streaming.inputs[0]] : sample;
}

async function runStream() {
  const value = inputValue();
  if (value === undefined) return;
  try {
    const names = model.streaming.inputs;
    const given = names.length === 1 && Array.isArray(value) ? { [names[0]]: value } : value;
    for (const n of names) if (!Array.isArray(given[n])) throw new Error(`input '${n}': a sequence (time, ...) of one sample`);
    const stream = model.stream();
    const perStep = {};
    let ms = 0;
    let last = null;
    const pushes = model.streaming.kind === "step" ? given[names[0]].length : 1;
    for (let t = 0; t < pushes; t++) {
      const feed = model.streaming.kind === "step" ? Object.fromEntries(names.map((n) => [n, given[n][t]])) : given;
      last = await stream.push(names.length === 1 ? feed[names[0]] : feed);
      ms += last.ms;
      for (const [k, v] of Object.entries(last.outputs)) (perStep[k] = perStep[k] || []).push(nested(v.data, v.dims));
    }
    const asArrays = model.streaming.kind === "step" ? perStep : Object.fromEntries(Object.entries(perStep).map(([k, v]) => [k, v[0]]));
    $("result").dataset.outputs = JSON.stringify(asArrays);
    $("result").textContent = Object.entries(asArrays).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join("\n");
    $("timing").textContent = model.streaming.kind === "step"
      ? `${stream.steps} steps, ${(ms / Math.max(1, pushes)).toFixed(2)} ms per step`
      : `one chunk of ${stream.steps} steps, ${ms.toFixed(2)} ms`;
    const att = last && last.outputs.attention_weights;
    drawAttention(att ? { dims: [1, ...att.dims], data: att.data } : null);  // the last push's, as for a sample
  } catch (err) {
    fail($("error"), err);
  }
}

function showStream() {
  const spec = model.streaming;
  $("input-help").textContent = spec.kind === "step"
    ? "One sample's sequence as JSON, (time, features) (or an object with one per input name): a new stream() " +
      "from the initial state takes it one step at a time, carrying the states; the outputs of every step are shown."
    : "One sample's chunk as JSON, (time, features) (or an object with one per input name): a new stream() from " +
      "the initial state runs it as one chunk.";
  $("random").textContent = "Random sequence";
  $("run").textContent = "Stream";
  $("input").value = JSON.stringify(randomSequence());
}

function showText() {
  $("input-help").textContent =
    "Texts, one per line: tokenized in the page as Keras's TextVectorization did " +
    `(standardize ${model.meta.text.standardize}, split ${model.meta.text.split}, ` +
    `length ${model.meta.text.output_sequence_length ?? "of the longest text"}, ${model.meta.text.vocabulary.length} tokens).`;
  $("random").textContent = "Example texts";
  $("input").value = (model.meta.text.examples || []).map((e) => e.text.replace(/\n/g, " ")).filter((t) => t.trim()).slice(0, 4).join("\n");
}

$("random").addEventListener("click", () => {
  if (!model) return;
  if (model.tokenizer) { showText(); run(); return; }
  if (model.streaming) { $("input").value = JSON.stringify(randomSequence()); run(); return; }
  const sample = model.randomSample();
  const value = model.inputs.length === 1 ? sample[model.inputs[0].name] : sample;
  $("input").value = JSON.stringify(value);
  run();
});
$("run").addEventListener("click", run);

try {
  // Where onnxruntime-web finds its .mjs/.wasm: ort/ beside the page, or the pinned CDN (module specifiers must be
  // absolute). Read from a meta tag: the page runs no inline script (its Content-Security-Policy forbids it).
  const wasmPaths = new URL(document.querySelector('meta[name="edgeattn-wasm-paths"]').content, document.baseURI).href;
  model = await EdgeAttn.load("model.onnx", { wasmPaths });
  showSpec(model.meta, model.streaming);
  if (model.streaming) await startStream();
  else await startChecked();
} catch (err) {
  check.dataset.status = "fail";
  check.dataset.maxAbs = "Infinity";
  check.textContent = `self-check: FAIL: ${err && err.message ? err.message : err}`;
}

// A streaming model may carry no reference set: say what it is, and check it only against what it stores.
async function startStream() {
  check.dataset.stream = model.streaming.kind;
  showStream();
  if (!model.meta.golden) {
    check.dataset.status = "unchecked";
    check.textContent = `${describeStream(model.streaming)}; no stored reference set, so no self-check`;
    return;
  }
  const result = await model.selfCheck();
  check.dataset.status = result.status;
  check.dataset.maxAbs = String(result.maxAbs);
  check.textContent = `${describeStream(model.streaming)}; self-check (verify --golden, here): ${result.message}`;
}

// Every other model: the stored reference set, re-run here (verify --golden).
async function startChecked() {
  const result = await model.selfCheck();
  check.dataset.status = result.status;
  check.dataset.maxAbs = String(result.maxAbs);
  check.textContent = `self-check (verify --golden, here): ${result.message}`;
  const first = model.randomSample();
  $("input").value = JSON.stringify(model.inputs.length === 1 ? first[model.inputs[0].name] : first);
  if (model.tokenizer) showText();
}
window.edgeattn = { EdgeAttn, get model() { return model; } };
document.body.dataset.ready = "true";
