// edgeattn.js: run an edgeattn ONNX model in the browser with onnxruntime-web (WebAssembly), and check it there
// against the reference outputs Keras computed at export time (what `edgeattn verify --golden` does in Python).
//
//   <script src="ort/ort.wasm.min.js"></script>            <!-- onnxruntime-web, before this module -->
//   <script type="module">
//     import { EdgeAttn } from "./edgeattn.js";
//     const model = await EdgeAttn.load("model.onnx");     // also reads model.json (spec + reference set)
//     const check = await model.selfCheck();               // {status: "pass"|"fail", maxAbs, atol, ...}
//     const { outputs, ms } = await model.predict([[[0.1], [0.9], ...]]);   // one input: nested arrays
//     const { outputs, ids } = await model.predictText(["A text.", "another"]); // a text model: strings in
//   </script>
//
// Streaming (issue #28): a model whose file holds `edgeattn.stream` (kind "step" or "stateful") carries its recurrent
// state as explicit inputs and outputs; `model.stream()` feeds them back from one push to the next:
//     const stream = model.stream();                       // its own state: zeros (empty caches) at the start
//     const { outputs } = await stream.push([0.1, 0.2]);   // step: one sample [F], or [B][F], or [B][1][F]
//     stream.reset();                                      // back to the initial state
// A whole-window model (no `edgeattn.stream`) streams through a ring buffer of its last T steps:
//     const win = model.window(10); await win.push([0.3]); // null until 10 steps are in, then predict() on them
// In Node.js: EdgeAttn.fromBytes(bytes, {ort}) with onnxruntime-node (examples/node/predict.mjs --stream).

const TYPED = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  int8: Int8Array,
};

/** The shape of nested arrays ([[1, 2], [3, 4]] -> [2, 2]). */
export function shapeOf(value) {
  const dims = [];
  for (let v = value; Array.isArray(v); v = v[0]) dims.push(v.length);
  return dims;
}

/** Nested arrays of a flat array with the given dims. */
export function nested(data, dims) {
  if (dims.length === 0) return data[0];
  const step = dims.slice(1).reduce((a, b) => a * b, 1);
  const out = [];
  for (let i = 0; i < dims[0]; i++) out.push(dims.length === 1 ? data[i] : nested(data.slice(i * step, (i + 1) * step), dims.slice(1)));
  return out;
}

// Text models: strings -> token ids exactly as Keras 3's TextVectorization (output_mode "int") computes them, by the
// rules the export stored in the model (metadata "edgeattn.text", also in model.json as "text"); the same rules,
// measured against TensorFlow, as edgeattn/tokenizer.py: lowercase ASCII A-Z only; strip the 32 ASCII punctuation
// characters only; split on runs of ASCII space \t \n \v \f \r only (not U+00A0, U+3000); "character": code points;
// unknown tokens -> the OOV index; pad with 0 (or truncate) to output_sequence_length, or to the longest text.
const ASCII_UPPER = /[A-Z]/g;
const ASCII_PUNCTUATION = /[!-\/:-@\[-`{-~]/g;
const ASCII_WHITESPACE = /[ \t\n\v\f\r]+/;

export class Tokenizer {
  constructor(spec) {
    if (!spec || spec.version !== 1) throw new Error("not an edgeattn text spec of version 1");
    if ((spec.num_oov_indices ?? 1) !== 1) throw new Error("the text spec has several OOV indices, which this tokenizer does not hash");
    this.spec = spec;
    this.length = spec.output_sequence_length ?? null;
    this.maskToken = spec.mask_token ?? "";
    this.index = new Map();
    spec.vocabulary.forEach((token, i) => { if (!this.index.has(token)) this.index.set(token, i); });
    this.index.delete(spec.oov_token ?? "[UNK]");  // the special tokens get their indices by the rules only
    this.index.delete(this.maskToken);
  }

  standardize(text) {
    const mode = this.spec.standardize;
    if (mode === "lower" || mode === "lower_and_strip_punctuation") text = text.replace(ASCII_UPPER, (c) => c.toLowerCase());
    if (mode === "strip_punctuation" || mode === "lower_and_strip_punctuation") text = text.replace(ASCII_PUNCTUATION, "");
    return text;
  }

  split(text) {
    if (this.spec.split === "whitespace") return text.split(ASCII_WHITESPACE).filter((piece) => piece.length > 0);
    if (this.spec.split === "character") return Array.from(text);  // code points, as tf.strings.unicode_split
    return [text];
  }

  /** One text's token ids, neither padded nor truncated. */
  ids(text) {
    if (typeof text !== "string") throw new Error(`texts must be strings, got ${typeof text}`);
    const oov = this.spec.oov_index ?? 1;
    const mask = this.spec.mask_index ?? 0;
    return this.split(this.standardize(text)).map((t) => (t === this.maskToken ? mask : this.index.get(t) ?? oov));
  }

  /** Token ids of a batch of texts: equal-length rows (output_sequence_length, or the longest text's). */
  encode(texts) {
    if (!Array.isArray(texts)) throw new Error("pass a list of strings (a batch)");
    const rows = texts.map((t) => this.ids(t));
    const width = this.length ?? rows.reduce((m, r) => Math.max(m, r.length), 0);
    const pad = this.spec.pad_index ?? 0;
    return rows.map((r) => r.slice(0, width).concat(Array(Math.max(0, width - r.length)).fill(pad)));
  }

  /** Keras's own ids on the spec's example texts against this tokenizer's: {passed, checked, first}. */
  selfCheck() {
    const examples = this.spec.examples || [];
    const wrong = examples.filter((e) => JSON.stringify(this.encode([e.text])[0]) !== JSON.stringify(e.ids));
    return { passed: wrong.length === 0, checked: examples.length, first: wrong.length ? wrong[0].text : null };
  }
}

/** metadata_props of an ONNX file ({key: value}), read from its bytes (onnxruntime's JS API does not expose them). */
export function onnxMetadata(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const decoder = new TextDecoder();
  let pos = 0;
  const varint = () => {
    let result = 0;
    for (let shift = 0, b = 0x80; b & 0x80; shift += 7) {
      if (pos >= view.length) throw new Error("not an ONNX file (truncated)");
      b = view[pos++];
      result += (b & 0x7f) * 2 ** shift;
    }
    return result;
  };
  const fields = (end, onField) => {
    while (pos < end) {
      const key = varint();
      const wire = key % 8;
      if (wire === 0) varint();
      else if (wire === 1) pos += 8;
      else if (wire === 5) pos += 4;
      else if (wire === 2) {
        const length = varint();
        const start = pos;
        pos += length;
        onField(Math.floor(key / 8), start, pos);
      } else throw new Error(`not an ONNX file (protobuf wire type ${wire})`);
    }
  };
  const meta = {};
  fields(view.length, (field, start, end) => {
    if (field !== 14) return;  // ModelProto.metadata_props: StringStringEntryProto {key = 1, value = 2}
    const after = pos;
    let key = "";
    let value = "";
    pos = start;
    fields(end, (f, s, e) => {
      if (f === 1) key = decoder.decode(view.subarray(s, e));
      if (f === 2) value = decoder.decode(view.subarray(s, e));
    });
    pos = after;
    meta[key] = value;
  });
  return meta;
}

function describe(shape) {
  return "(" + shape.map((d) => (typeof d === "number" ? d : d || "?")).join(", ") + ")";
}

const STREAM_KEY = "edgeattn.stream";

/** A model's streaming contract (metadata `edgeattn.stream`: {kind, max_steps, inputs, outputs, states}), or null. */
export function streamSpec(metadata) {
  const raw = metadata && metadata[STREAM_KEY];
  if (raw === undefined || raw === null) return null;
  const spec = typeof raw === "string" ? JSON.parse(raw) : raw;
  if (spec.kind !== "step" && spec.kind !== "stateful")
    throw new Error(`${STREAM_KEY}: kind must be "step" or "stateful", got ${JSON.stringify(spec.kind)}`);
  for (const key of ["inputs", "outputs", "states"])
    if (!Array.isArray(spec[key])) throw new Error(`${STREAM_KEY}: "${key}" must be a list`);
  for (const s of spec.states) {
    if (typeof s.input !== "string" || typeof s.output !== "string" || !Array.isArray(s.shape))
      throw new Error(`${STREAM_KEY}: a state needs "input", "output" and "shape"`);
    if (s.grows && s.shape[0] !== null) throw new Error(`${STREAM_KEY}: growing state '${s.input}' must have null as its first axis`);
    if (s.shape.some((d, i) => !(Number.isInteger(d) && d >= 0) && !(s.grows && i === 0)))
      throw new Error(`${STREAM_KEY}: state '${s.input}' has the shape ${JSON.stringify(s.shape)}`);
    if (!TYPED[s.dtype || "float32"]) throw new Error(`${STREAM_KEY}: state '${s.input}' has the type ${s.dtype}, which edgeattn.js does not feed`);
  }
  return spec;
}

/** A single input's value (nested arrays, {data, dims} or a number) rather than an object {name: value}. */
function isValue(x) {
  return typeof x === "number" || Array.isArray(x) || Boolean(x && x.dims);
}

/** {dims, data} (data a flat array) of nested arrays, {data, dims} or a number. */
function flat(value) {
  if (value && value.dims) return { dims: Array.from(value.dims), data: Array.from(value.data, Number) };
  return { dims: shapeOf(value), data: [value].flat(Infinity) };
}

/** A state's initial value for `batch` samples: zeros, of length 0 on a growing state's first axis. */
function initialState(ort, state, batch) {
  const dtype = state.dtype || "float32";
  const dims = [batch, ...state.shape.map((d) => (d === null ? 0 : d))];
  return new ort.Tensor(dtype, new TYPED[dtype](dims.reduce((a, b) => a * b, 1)), dims);
}

/** Outputs as predict() gives them ({name: {dims, data}}); without the batch axis for an unbatched push; for a step
 * model, without the time axis of a (batch, 1, ...) sequence output (rank 3 and more: a (batch, 1) output is read as
 * a many-to-one output of width 1, which it is for Keras's models). */
function plainOutputs(results, names, { dropTime, unbatched }) {
  const outputs = {};
  for (const name of names) {
    const dims = Array.from(results[name].dims);
    if (dropTime && dims.length >= 3 && dims[1] === 1) dims.splice(1, 1);
    if (unbatched) dims.splice(0, 1);
    outputs[name] = { dims, data: Array.from(results[name].data, Number) };
  }
  return outputs;
}

/** Serialize a caller's calls: each starts when the one before it has settled. */
function queued(owner, work) {
  owner._pending = (owner._pending || 0) + 1;
  const run = owner._queue.then(work).finally(() => { owner._pending -= 1; });
  owner._queue = run.catch(() => {});
  return run;
}

/** reset() in order with the pushes: at once when none is pending, else after those already made. */
function orderedReset(owner, clear) {
  if (!owner._pending) {
    clear();
    return Promise.resolve();
  }
  return queued(owner, async () => clear());
}

export class EdgeAttn {
  /** `metadata`: the file's metadata_props ({key: value}, onnxMetadata of its bytes). */
  constructor(session, meta, ort, metadata = {}) {
    this.session = session;
    this.meta = meta;
    this.ort = ort;
    this.metadata = metadata;
    this.streaming = streamSpec(metadata) || (meta.stream ? streamSpec({ [STREAM_KEY]: meta.stream }) : null);
    this._queue = Promise.resolve();  // one session.run at a time (predict, streams and windows share the session)
    if (this.streaming) {
      const inputs = new Set(session.inputNames);
      const outputs = new Set(session.outputNames);
      const missing = [
        ...this.streaming.inputs.filter((n) => !inputs.has(n)),
        ...this.streaming.states.map((s) => s.input).filter((n) => !inputs.has(n)),
        ...this.streaming.outputs.filter((n) => !outputs.has(n)),
        ...this.streaming.states.map((s) => s.output).filter((n) => !outputs.has(n)),
      ];
      if (missing.length) throw new Error(`${STREAM_KEY} names what the graph does not have: ${missing.join(", ")}`);
    }
  }

  /**
   * A model from the bytes of its file, described by the session itself (no model.json, so no reference set):
   * for Node.js with onnxruntime-node, or a page that fetches the file itself. `options`: {ort} (default:
   * globalThis.ort), {sessionOptions} (passed to InferenceSession.create), {name}.
   */
  static async fromBytes(bytes, options = {}) {
    const ort = options.ort || globalThis.ort;
    if (!ort) throw new Error("no onnxruntime: pass {ort} (onnxruntime-node or onnxruntime-web)");
    const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    const session = await ort.InferenceSession.create(view, options.sessionOptions || {});
    const metadata = onnxMetadata(view);
    const spec = (m) => ({ name: m.name, shape: Array.from(m.shape || [], (d) => (typeof d === "number" && d >= 0 ? d : String(d))), dtype: m.type });
    const meta = {
      name: options.name || "model",
      inputs: session.inputMetadata.map(spec),
      outputs: session.outputMetadata.map(spec),
      attention: session.outputNames.includes("attention_weights"),
      text: metadata["edgeattn.text"] ? JSON.parse(metadata["edgeattn.text"]) : null,
      int_high: {},
      golden: null,
    };
    return new EdgeAttn(session, meta, ort, metadata);
  }

  /**
   * Load a model and its description. `options`: {ort} (default: globalThis.ort), {metaUrl} (default: the model's
   * URL with .json for .onnx), {wasmPaths} (where onnxruntime-web finds its .wasm/.mjs), {threads} (default 1).
   */
  static async load(modelUrl, options = {}) {
    const ort = options.ort || globalThis.ort;
    if (!ort) throw new Error("onnxruntime-web is not loaded: include ort.wasm.min.js before edgeattn.js, or pass {ort}");
    const metaUrl = options.metaUrl || String(modelUrl).replace(/\.onnx$/, "") + ".json";
    const metaResponse = await fetch(metaUrl);
    if (!metaResponse.ok) throw new Error(`${metaUrl}: HTTP ${metaResponse.status}`);
    const meta = await metaResponse.json();
    ort.env.wasm.numThreads = options.threads || 1;
    if (options.wasmPaths) ort.env.wasm.wasmPaths = options.wasmPaths;
    const response = await fetch(modelUrl);
    if (!response.ok) throw new Error(`${modelUrl}: HTTP ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    let session;
    try {
      session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    } catch (err) {
      throw new Error(`onnxruntime-web cannot load ${modelUrl}: ${err && err.message ? err.message : err}`);
    }
    return new EdgeAttn(session, meta, ort, onnxMetadata(bytes));
  }

  get inputs() {
    return this.meta.inputs;
  }

  get outputs() {
    return this.meta.outputs;
  }

  /** An onnxruntime-web tensor for one input, from nested arrays or {data, dims}; checks rank and fixed axes. */
  tensor(spec, value) {
    const dims = value && value.dims ? Array.from(value.dims) : shapeOf(value);
    const data = value && value.data ? Array.from(value.data) : [value].flat(Infinity);
    const wrong =
      dims.length !== spec.shape.length || spec.shape.some((d, i) => typeof d === "number" && i > 0 && dims[i] !== d);
    if (wrong) throw new Error(`input '${spec.name}' must have shape ${describe(spec.shape)}, got ${describe(dims)}`);
    if (data.some((v) => typeof v !== "number" || !Number.isFinite(v)))
      throw new Error(`input '${spec.name}' must hold finite numbers`);
    const Typed = TYPED[spec.dtype];
    if (!Typed) throw new Error(`input '${spec.name}' has the type ${spec.dtype}, which edgeattn.js does not feed`);
    const array = spec.dtype === "int64" ? BigInt64Array.from(data, (v) => BigInt(Math.round(v))) : Typed.from(data);
    return new this.ort.Tensor(spec.dtype, array, dims);
  }

  /**
   * Run the model. `inputs`: {name: nested arrays or {data, dims}}, or for a one-input model the value itself.
   * Returns {outputs: {name: {dims, data}}, ms}: data as plain numbers, ms the time of the run itself.
   */
  async predict(inputs) {
    // A streaming model's data inputs are named in its contract; the states it is not given start from the initial
    // state (zeros, empty caches), as the contract says.
    const dataNames = this.streaming ? this.streaming.inputs : this.inputs.map((s) => s.name);
    const single = dataNames.length === 1 && (Array.isArray(inputs) || (inputs && inputs.dims));
    const given = single ? { [dataNames[0]]: inputs } : { ...(inputs || {}) };
    const missing = this.inputs.filter((s) => !(s.name in given)).map((s) => s.name);
    const states = this.streaming ? this.streaming.states.filter((s) => missing.includes(s.input)) : [];
    const stillMissing = missing.filter((n) => !states.some((s) => s.input === n));
    if (stillMissing.length) throw new Error(`missing input(s): ${stillMissing.join(", ")}`);
    const feeds = {};
    for (const spec of this.inputs) if (spec.name in given) feeds[spec.name] = this.tensor(spec, given[spec.name]);
    if (states.length) {
      const batch = feeds[dataNames[0]].dims[0];
      for (const s of states) feeds[s.input] = initialState(this.ort, s, batch);
    }
    const { results, ms } = await this.run(feeds);
    const outputs = {};
    for (const name of this.session.outputNames) {
      outputs[name] = { dims: Array.from(results[name].dims), data: Array.from(results[name].data, Number) };
    }
    return { outputs, ms };
  }

  /** session.run on onnxruntime tensors, one run at a time on this session: {results, ms} (ms: the run itself). */
  run(feeds) {
    return queued(this, async () => {
      const start = performance.now();
      const results = await this.session.run(feeds);
      return { results, ms: performance.now() - start };
    });
  }

  /** A new stream over a streaming model (its own state; see Stream). */
  stream() {
    return new Stream(this);
  }

  /** A ring buffer of the last `length` steps over a whole-window model (see Window). */
  window(length) {
    return new Window(this, length);
  }

  /** A text model's tokenizer (null for other models). */
  get tokenizer() {
    if (!this._tokenizer && this.meta.text) this._tokenizer = new Tokenizer(this.meta.text);
    return this._tokenizer || null;
  }

  /** Run a text model on strings: {outputs, ms, ids}, ids as the tokenizer made them (Keras's rules). */
  async predictText(texts) {
    if (!this.tokenizer) throw new Error("this is not a text model (its file holds no edgeattn.text)");
    const ids = this.tokenizer.encode(texts);
    const dims = [ids.length, ids.length ? ids[0].length : this.tokenizer.length || 0];
    return { ...(await this.predict({ [this.inputs[0].name]: { dims, data: ids.flat() } })), ids };
  }

  /** Run the stored reference inputs and compare with the stored reference outputs (Keras's, at export); for a text
   * model, also the tokenizer against Keras's own ids on the stored example texts. */
  async selfCheck() {
    const golden = this.meta.golden;
    if (!golden) throw new Error("this model holds no reference set (exported with --no-golden, or loaded without model.json)");
    const tokens = this.tokenizer ? this.tokenizer.selfCheck() : null;
    const { outputs, ms } = await this.predict(golden.inputs);
    let maxAbs = 0;
    let passed = true;
    const perOutput = {};
    for (const [name, want] of Object.entries(golden.outputs)) {
      const atol = (golden.atols || {})[name] ?? golden.atol;  // a quantized file: what it was accepted with
      const got = outputs[name];
      let worst = got && got.data.length === want.data.length ? 0 : Infinity;
      if (got) for (let i = 0; i < want.data.length && worst !== Infinity; i++) {
        const diff = Math.abs(got.data[i] - want.data[i]);
        worst = Number.isNaN(diff) ? Infinity : Math.max(worst, diff);
      }
      perOutput[name] = worst;
      maxAbs = Math.max(maxAbs, worst);
      passed = passed && worst <= atol;
    }
    const samples = Object.values(golden.inputs)[0].dims[0];
    const tokenNote = tokens ? `; tokenizer: ${tokens.passed ? `Keras's ids on ${tokens.checked} texts` : `differs from Keras on ${JSON.stringify(tokens.first)}`}` : "";
    passed = passed && (!tokens || tokens.passed);
    return {
      status: passed ? "pass" : "fail",
      tokens,
      maxAbs,
      atol: golden.atol,
      perOutput,
      ms,
      message: `${passed ? "pass" : "FAIL"}: max abs ${maxAbs.toPrecision(3)} (tolerance ${Math.max(golden.atol, ...Object.values(golden.atols || {})).toPrecision(3)}) on ${samples} stored sample(s), ${ms.toFixed(2)} ms${tokenNote}`,
    };
  }

  /** One random sample (batch 1) of the right shape: floats in [0, 1), token ids in [1, intHigh). */
  randomSample(length) {
    const sample = {};
    for (const spec of this.inputs) {
      const ref = this.meta.golden && this.meta.golden.inputs[spec.name] ? this.meta.golden.inputs[spec.name].dims : [];
      const dims = spec.shape.map((d, i) => (i === 0 ? 1 : typeof d === "number" ? d : length || ref[i] || 8));
      const size = dims.reduce((a, b) => a * b, 1);
      const isInt = spec.dtype.startsWith("int") || spec.dtype.startsWith("uint");
      const high = (this.meta.int_high || {})[spec.name] || 2;
      const data = Array.from({ length: size }, () => (isInt ? 1 + Math.floor(Math.random() * (high - 1)) : Math.random()));
      sample[spec.name] = nested(data, dims);
    }
    return sample;
  }
}

/** How a pushed value's dims read against a data input of shape (batch, time, features...): "full" (every axis),
 * "batched" (no time axis: one step), "unbatched" (no batch axis; for a step, no time axis either), or null. A chunk
 * (`timeFree`) keeps its time axis: (time, features...) is one sample's. */
function stepLayout(spec, dims, { timeFree }) {
  const rank = spec.shape.length;
  if (rank < 2) throw new Error(`input '${spec.name}' has the shape ${describe(spec.shape)}: no (batch, time, ...) axes to stream over`);
  if (dims.length === rank) return "full";
  if (timeFree) return dims.length === rank - 1 ? "unbatched" : null;  // a chunk: (time, ...) for one sample
  if (dims.length === rank - 1) return "batched";
  if (dims.length === rank - 2) return "unbatched";
  return null;
}

/**
 * A stream over a streaming model (`edgeattn.stream`): `await push(inputs)` runs one step (kind "step": per data
 * input one sample [F...], or [B][F...], or [B][1][F...]) or one chunk (kind "stateful": [T][F...] or [B][T][F...]),
 * feeding every state output back as the next push's state input; the first push starts from zeros (growing states
 * from length 0). `inputs`: the value itself for a one-input model, else {name: value}; a value is nested arrays or
 * {data, dims}. Resolves to {outputs: {name: {dims, data}}, ms} like predict(): without the batch axis when the push
 * had none; for a step model without the time axis of a (batch, 1, ...) output. Pushes run in order; `reset()`
 * returns to the initial state, in order with them (and the batch size may then change). Streams of one model share
 * its session, one run at a time, and nothing else.
 */
export class Stream {
  constructor(model) {
    if (!model.streaming)
      throw new Error("this model holds no edgeattn.stream metadata (it takes whole windows): use model.window(T)");
    this.model = model;
    this.spec = model.streaming;
    this._queue = Promise.resolve();
    this.reset();
  }

  get kind() {
    return this.spec.kind;
  }

  /** Back to the initial state: zeros, empty caches (the next push may have another batch size). In order with the
   * pushes: at once when none is pending, else after the pushes made before it (the promise says when). */
  reset() {
    return orderedReset(this, () => {
      this._states = null;
      this.batch = null;
      this.steps = 0;  // time steps pushed since the start (a chunk counts its length)
    });
  }

  /** The states the next push will feed ({input name: {dims, data}}), or null before the first push. */
  get states() {
    if (!this._states) return null;
    return Object.fromEntries(Object.entries(this._states).map(([k, t]) => [k, { dims: Array.from(t.dims), data: Array.from(t.data, Number) }]));
  }

  push(inputs) {
    return queued(this, () => this._push(inputs));
  }

  async _push(inputs) {
    const model = this.model;
    const names = this.spec.inputs;
    const given = names.length === 1 && isValue(inputs) ? { [names[0]]: inputs } : inputs || {};
    const missing = names.filter((n) => !(n in given));
    if (missing.length) throw new Error(`missing input(s): ${missing.join(", ")}`);
    const step = this.spec.kind === "step";
    let unbatched = null;
    let batch = null;
    let length = null;
    const feeds = {};
    for (const name of names) {
      const spec = model.inputs.find((s) => s.name === name);
      const { dims, data } = flat(given[name]);
      const layout = stepLayout(spec, dims, { timeFree: !step });
      const features = describe(spec.shape.slice(2));
      const expected = step
        ? `one step: ${features.slice(1, -1) ? features : "a number"} for one sample, (batch, ${features.slice(1)} or (batch, 1, ${features.slice(1)}`
        : `a chunk: (time, ${features.slice(1)} for one sample or (batch, time, ${features.slice(1)}`;
      if (!layout || (layout === "full" && step && dims[1] !== 1))
        throw new Error(`input '${name}' takes ${expected}; got ${describe(dims)}`);
      const full = layout === "unbatched" ? [1, ...(step ? [1] : []), ...dims] : layout === "batched" ? [dims[0], 1, ...dims.slice(1)] : dims;
      if (full.slice(2).some((d, i) => typeof spec.shape[i + 2] === "number" && d !== spec.shape[i + 2]))
        throw new Error(`input '${name}' takes ${expected}; got ${describe(dims)}`);
      if (unbatched !== null && unbatched !== (layout === "unbatched"))
        throw new Error("push all inputs with a batch axis, or all without");
      if (batch !== null && full[0] !== batch) throw new Error(`inputs of different batch sizes (${batch}, ${full[0]})`);
      if (length !== null && full[1] !== length) throw new Error(`inputs of different lengths (${length}, ${full[1]})`);
      unbatched = layout === "unbatched";
      batch = full[0];
      length = full[1];
      feeds[name] = model.tensor(spec, { dims: full, data });
    }
    if (this.batch !== null && batch !== this.batch)
      throw new Error(`this stream runs batch ${this.batch}; got batch ${batch} (reset() first to start another)`);
    const states = this._states || Object.fromEntries(this.spec.states.map((s) => [s.input, initialState(model.ort, s, batch)]));
    Object.assign(feeds, states);
    const { results, ms } = await model.run(feeds);
    const next = {};
    for (const s of this.spec.states) {
      const t = results[s.output];
      const dims = Array.from(t.dims);
      const want = [batch, ...s.shape];
      if (dims.length !== want.length || dims.some((d, i) => want[i] !== null && d !== want[i]))
        throw new Error(`state '${s.output}' came back with the shape ${describe(dims)}, not ${describe(want.map((d) => (d === null ? "grows" : d)))}`);
      next[s.input] = new model.ort.Tensor(t.type, t.data, dims);
    }
    this._states = next;
    this.batch = batch;
    this.steps += length;
    return { outputs: plainOutputs(results, this.spec.outputs, { dropTime: step, unbatched }), ms };
  }
}

/**
 * Streaming over a whole-window model (no `edgeattn.stream`; input (batch, T, features...)): a ring buffer of the
 * last `length` steps. `await push(step)` (per input one sample [F...] or [B][F...]; {name: value} for several
 * inputs) resolves to null until `length` steps are in, then to predict() on the window (oldest step first), without
 * the batch axis when the push had none. `reset()` empties the buffer.
 */
export class Window {
  constructor(model, length) {
    if (model.streaming) throw new Error(`this model streams itself (edgeattn.stream kind ${model.streaming.kind}): use model.stream()`);
    if (!Number.isInteger(length) || length < 1) throw new Error(`a window is a whole number of steps >= 1, got ${length}`);
    for (const spec of model.inputs) {
      if (spec.shape.length < 2) throw new Error(`input '${spec.name}' has the shape ${describe(spec.shape)}: no time axis`);
      if (typeof spec.shape[1] === "number" && spec.shape[1] !== length)
        throw new Error(`input '${spec.name}' takes ${spec.shape[1]} steps, not a window of ${length}`);
    }
    this.model = model;
    this.length = length;
    this._queue = Promise.resolve();
    this.reset();
  }

  /** Empty the buffer; in order with the pushes, as Stream.reset(). */
  reset() {
    return orderedReset(this, () => {
      this._ring = Object.fromEntries(this.model.inputs.map((s) => [s.name, []]));  // per input: steps, oldest first
      this.batch = null;
      this.steps = 0;
    });
  }

  /** How many steps the buffer holds (up to `length`). */
  get filled() {
    return Math.min(this.steps, this.length);
  }

  push(inputs) {
    return queued(this, () => this._push(inputs));
  }

  async _push(inputs) {
    const model = this.model;
    const names = model.inputs.map((s) => s.name);
    const given = names.length === 1 && isValue(inputs) ? { [names[0]]: inputs } : inputs || {};
    const missing = names.filter((n) => !(n in given));
    if (missing.length) throw new Error(`missing input(s): ${missing.join(", ")}`);
    let unbatched = null;
    let batch = null;
    const rows = {};
    for (const spec of model.inputs) {
      const { dims, data } = flat(given[spec.name]);
      const layout = stepLayout(spec, dims, { timeFree: false });
      const features = spec.shape.slice(2);
      const perSample = layout === "unbatched" ? dims : dims.slice(1);
      if (!layout || layout === "full" || perSample.some((d, i) => typeof features[i] === "number" && d !== features[i]))
        throw new Error(`input '${spec.name}' takes one step: ${describe(features)} for one sample or (batch, ${describe(features).slice(1)}; got ${describe(dims)}`);
      const b = layout === "unbatched" ? 1 : dims[0];
      if (unbatched !== null && unbatched !== (layout === "unbatched")) throw new Error("push all inputs with a batch axis, or all without");
      if (batch !== null && b !== batch) throw new Error(`inputs of different batch sizes (${batch}, ${b})`);
      unbatched = layout === "unbatched";
      batch = b;
      rows[spec.name] = { data, perSample };
    }
    if (this.batch !== null && batch !== this.batch)
      throw new Error(`this window holds batch ${this.batch}; got batch ${batch} (reset() first to start another)`);
    for (const name of names) {
      const ring = this._ring[name];
      ring.push(rows[name].data);
      if (ring.length > this.length) ring.shift();
    }
    this.batch = batch;
    this.steps += 1;
    if (this.steps < this.length) return null;
    const window = {};
    for (const name of names) {
      const ring = this._ring[name];
      const size = ring[0].length / batch;  // one sample's step
      const data = new Array(batch * this.length * size);
      for (let b = 0; b < batch; b++)
        for (let t = 0; t < this.length; t++)
          for (let i = 0; i < size; i++) data[(b * this.length + t) * size + i] = ring[t][b * size + i];
      window[name] = { dims: [batch, this.length, ...rows[name].perSample], data };
    }
    const { outputs, ms } = await model.predict(window);
    if (unbatched) for (const o of Object.values(outputs)) o.dims.splice(0, 1);
    return { outputs, ms };
  }
}
