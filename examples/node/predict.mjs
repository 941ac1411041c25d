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
// Errors: one line "error: ..." on stderr and exit code 2 (bad input) or 1.
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { Tokenizer, onnxMetadata } from "../../edgeattn/deploy/web_assets/edgeattn.js";

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

async function main([modelPath, inputPath]) {
  if (!modelPath || !inputPath) throw new UsageError("usage: node examples/node/predict.mjs MODEL.onnx INPUT.json|-");
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

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`error: ${err.message.split("\n")[0]}\n`);
  process.exit(err instanceof UsageError ? 2 : 1);
});
