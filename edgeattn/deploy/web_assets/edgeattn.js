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

export class EdgeAttn {
  constructor(session, meta, ort) {
    this.session = session;
    this.meta = meta;
    this.ort = ort;
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
    return new EdgeAttn(session, meta, ort);
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
    const single = this.inputs.length === 1 && (Array.isArray(inputs) || (inputs && inputs.dims));
    const given = single ? { [this.inputs[0].name]: inputs } : inputs || {};
    const missing = this.inputs.filter((s) => !(s.name in given)).map((s) => s.name);
    if (missing.length) throw new Error(`missing input(s): ${missing.join(", ")}`);
    const feeds = {};
    for (const spec of this.inputs) feeds[spec.name] = this.tensor(spec, given[spec.name]);
    const start = performance.now();
    const results = await this.session.run(feeds);
    const ms = performance.now() - start;
    const outputs = {};
    for (const name of this.session.outputNames) {
      outputs[name] = { dims: Array.from(results[name].dims), data: Array.from(results[name].data, Number) };
    }
    return { outputs, ms };
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
      const ref = this.meta.golden.inputs[spec.name].dims;
      const dims = spec.shape.map((d, i) => (i === 0 ? 1 : typeof d === "number" ? d : length || ref[i]));
      const size = dims.reduce((a, b) => a * b, 1);
      const isInt = spec.dtype.startsWith("int") || spec.dtype.startsWith("uint");
      const high = this.meta.int_high[spec.name] || 2;
      const data = Array.from({ length: size }, () => (isInt ? 1 + Math.floor(Math.random() * (high - 1)) : Math.random()));
      sample[spec.name] = nested(data, dims);
    }
    return sample;
  }
}
