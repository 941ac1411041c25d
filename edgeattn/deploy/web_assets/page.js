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

function showSpec(meta) {
  const rows = [...meta.inputs.map((s) => ["input", s]), ...meta.outputs.map((s) => ["output", s])];
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

async function run() {
  $("error").textContent = "";
  if (!model) { $("error").textContent = "the model did not load (see the self-check above)"; return; }
  if (model.tokenizer) { await runText(); return; }
  let value;
  try {
    value = JSON.parse($("input").value);
  } catch (err) {
    fail($("error"), new Error(`not valid JSON: ${err.message}`));
    return;
  }
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
  showSpec(model.meta);
  const result = await model.selfCheck();
  check.dataset.status = result.status;
  check.dataset.maxAbs = String(result.maxAbs);
  check.textContent = `self-check (verify --golden, here): ${result.message}`;
  const first = model.randomSample();
  $("input").value = JSON.stringify(model.inputs.length === 1 ? first[model.inputs[0].name] : first);
  if (model.tokenizer) showText();
} catch (err) {
  check.dataset.status = "fail";
  check.dataset.maxAbs = "Infinity";
  check.textContent = `self-check: FAIL: ${err && err.message ? err.message : err}`;
}
window.edgeattn = { EdgeAttn, get model() { return model; } };
document.body.dataset.ready = "true";
