// Run an edgeattn ONNX model in Node.js with onnxruntime-node and print the predictions and the attention.
//
//   npm ci                                                       # onnxruntime-node, pinned in package.json
//   node examples/node/predict.mjs models/seed.onnx x.json       # x.json: nested arrays (batch, time, features)
//   echo '[[[0.1],[0.9],[0.2],[0.3],[0.4],[0.5],[0.6],[0.7],[0.8],[0.0]]]' | node examples/node/predict.mjs models/seed.onnx -
//
// INPUT is JSON: nested arrays for a one-input model, or {"name": nested arrays, ...}. The output is one JSON
// object on stdout: {"outputs": {"y": nested arrays, "attention_weights": ...}, "ms": time of the run}.
// A text model (exported from Keras's TextVectorization) takes texts: a JSON list of strings, or a .txt file with one
// text per line; they are tokenized as Keras did, by the rules stored in the model (the Tokenizer of
// edgeattn/deploy/web_assets/edgeattn.js), and the output also holds the token ids ("ids").
//   node examples/node/predict.mjs text-model.onnx texts.txt
// Streaming (issue #28): INPUT is a whole sequence, nested (batch, time, features) (or {"name": ...}), fed one step at
// a time through EdgeAttn's stream() (edgeattn.js, the code the web page runs):
//   node examples/node/predict.mjs step-model.onnx x.json --stream             # a model with edgeattn.stream
//   node examples/node/predict.mjs stateful-model.onnx x.json --stream --chunk 50   # kind "stateful": chunks
//   node examples/node/predict.mjs models/seed.onnx x.json --window 10         # any other model: the last 10 steps
// and prints {"outputs": {"name": (batch, pushes, ...)}, "ms_per_step": ..., "steps": ..., "pushes": ...}: each
// push's outputs stacked on axis 1 (one push per step; --chunk N: per N steps; --window T: from step T-1 on,
// "first_step" = T-1); ms_per_step: the wall time of all pushes over the steps pushed.
// Errors: one line "error: ..." on stderr and exit code 2 (bad input) or 1.
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { EdgeAttn, Tokenizer, onnxMetadata } from "../../edgeattn/deploy/web_assets/edgeattn.js";

const TYPED = { float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array };

function shapeOf(value) {
  const dims = [];
  for (let v = value; Array.isArray(v); v = v[0]) dims.push(v.length);
  return dims;
}

function nested(data, dims) {
  if (dims.length <= 1) return Array.from(data, Number);
  const step = dims.slice(1).reduce((a, b) => a * b, 1);
  return Array.from({ length: dims[0] }, (_, i) => nested(data.slice(i * step, (i + 1) * step), dims.slice(1)));
}

class UsageError extends Error {}

const USAGE = "usage: node examples/node/predict.mjs MODEL.onnx INPUT.json|- [--stream [--chunk N] | --window T]";

function parseArgs(argv) {
  const positional = [];
  const flags = { stream: false, chunk: 1, window: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const count = () => {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1) throw new UsageError(`${arg} takes a whole number >= 1, got ${argv[i]}`);
      return n;
    };
    if (arg === "--stream") flags.stream = true;
    else if (arg === "--chunk") flags.chunk = count();
    else if (arg === "--window") flags.window = count();
    else if (arg.startsWith("--")) throw new UsageError(`unknown option ${arg}\n${USAGE}`);
    else positional.push(arg);
  }
  if (positional.length !== 2) throw new UsageError(USAGE);
  if (flags.stream && flags.window) throw new UsageError("--stream or --window, not both");
  return [positional, flags];
}

async function main(argv) {
  const [[modelPath, inputPath], flags] = parseArgs(argv);
  if (flags.stream || flags.window) return streamMain(modelPath, inputPath, flags);
  const bytes = readFileSync(modelPath); // read once: the session and the metadata come from the same bytes
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 });
  const textSpec = onnxMetadata(bytes)["edgeattn.text"];
  let given;
  let ids;
  try {
    const raw = readFileSync(inputPath === "-" ? 0 : inputPath, "utf8");
    given = textSpec && inputPath.endsWith(".txt") ? raw.replace(/\n$/, "").split("\n").map((line) => line.replace(/\r$/, "")) : JSON.parse(raw);
  } catch (err) {
    throw new UsageError(`${inputPath}: ${err.message}`);
  }
  const specs = session.inputMetadata;
  if (textSpec) {
    if (!Array.isArray(given) || !given.every((t) => typeof t === "string"))
      throw new UsageError(`${inputPath}: a text model takes a JSON list of strings or a .txt file`);
    ids = new Tokenizer(JSON.parse(textSpec)).encode(given);
    given = ids;
  }
  if (specs.length === 1 && Array.isArray(given)) given = { [specs[0].name]: given };
  const feeds = {};
  for (const spec of specs) {
    const value = given[spec.name];
    if (value === undefined) throw new UsageError(`missing input '${spec.name}'`);
    const dims = shapeOf(value);
    const fixed = spec.shape.every((d, i) => i === 0 || typeof d !== "number" || dims[i] === d);
    if (dims.length !== spec.shape.length || !fixed)
      throw new UsageError(`input '${spec.name}' must have shape (${spec.shape.join(", ")}), got (${dims.join(", ")})`);
    const flat = value.flat(Infinity);
    const Typed = TYPED[spec.type];
    if (!Typed) throw new UsageError(`input '${spec.name}' has the type ${spec.type}, which this example does not feed`);
    feeds[spec.name] = new ort.Tensor(spec.type, spec.type === "int64" ? BigInt64Array.from(flat, (v) => BigInt(v)) : Typed.from(flat), dims);
  }
  const start = performance.now();
  const results = await session.run(feeds);
  const ms = performance.now() - start;
  const outputs = Object.fromEntries(session.outputNames.map((n) => [n, nested(results[n].data, results[n].dims)]));
  process.stdout.write(JSON.stringify(ids ? { outputs, ids, ms } : { outputs, ms }) + "\n");
}

// The sequence through EdgeAttn.stream() (or .window(T)), one push per step (or per --chunk steps).
async function streamMain(modelPath, inputPath, flags) {
  const model = await EdgeAttn.fromBytes(readFileSync(modelPath), { ort, sessionOptions: { intraOpNumThreads: 1 } });
  if (flags.stream && !model.streaming)
    throw new UsageError(`${modelPath} holds no edgeattn.stream metadata (it takes whole windows): pass --window T`);
  if (flags.window && model.streaming)
    throw new UsageError(`${modelPath} streams itself (edgeattn.stream kind ${model.streaming.kind}): pass --stream`);
  let given;
  try {
    given = JSON.parse(readFileSync(inputPath === "-" ? 0 : inputPath, "utf8"));
  } catch (err) {
    throw new UsageError(`${inputPath}: ${err.message}`);
  }
  const names = model.streaming ? model.streaming.inputs : model.inputs.map((s) => s.name);
  if (names.length === 1 && Array.isArray(given)) given = { [names[0]]: given };
  let steps = null;
  for (const name of names) {
    const dims = shapeOf(given[name]);
    if (given[name] === undefined) throw new UsageError(`missing input '${name}'`);
    const rank = model.inputs.find((s) => s.name === name).shape.length;
    if (dims.length !== rank || dims.length < 2)
      throw new UsageError(`input '${name}' must be a sequence of rank ${rank} (batch, time, ...), got (${dims.join(", ")})`);
    if (steps !== null && dims[1] !== steps) throw new UsageError(`the inputs have different lengths (${steps}, ${dims[1]})`);
    steps = dims[1];
  }
  const chunked = model.streaming && model.streaming.kind === "stateful";
  const size = chunked ? flags.chunk : 1;
  const runner = flags.window ? model.window(flags.window) : model.stream();
  const stacked = {};
  let pushes = 0;
  const start = performance.now();
  for (let t = 0; t < steps; t += size) {
    const feed = Object.fromEntries(names.map((n) => [n, given[n].map((row) => (chunked ? row.slice(t, t + size) : row[t]))]));
    let result;
    try {
      result = await runner.push(feed);
    } catch (err) {
      throw /^(input '|missing input|inputs of different)/.test(err.message) ? new UsageError(err.message) : err;
    }
    pushes += 1;
    if (result === null) continue;  // a window not yet full
    for (const [name, out] of Object.entries(result.outputs)) {
      const rows = nested(out.data, out.dims);
      stacked[name] = stacked[name] || rows.map(() => []);
      rows.forEach((row, b) => stacked[name][b].push(row));
    }
  }
  const msPerStep = steps ? (performance.now() - start) / steps : 0;
  const report = { outputs: stacked, ms_per_step: msPerStep, steps, pushes };
  if (flags.window) report.first_step = flags.window - 1;
  process.stdout.write(JSON.stringify(report) + "\n");
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`error: ${err.message.split("\n")[0]}\n`);
  process.exit(err instanceof UsageError ? 2 : 1);
});
