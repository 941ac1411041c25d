// edgeattn.js: run an edgeattn ONNX model in the browser with onnxruntime-web (WebAssembly), and check it there
// against the reference outputs Keras computed at export time (what `edgeattn verify --golden` does in Python).
//
//   <script src="ort/ort.wasm.min.js"></script>            <!-- onnxruntime-web, before this module -->
//   <script type="module">
//     import { EdgeAttn } from "./edgeattn.js";
//     const model = await EdgeAttn.load("model.onnx");     // also reads model.json (spec + reference set)
//     const check = await model.selfCheck();               // {status: "pass"|"fail", maxAbs, atol, ...}
//     const { outputs, ms } = await model.predict([[[0.1], [0.9], ...]]);   // one input: nested arrays
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

  /** Run the stored reference inputs and compare with the stored reference outputs (Keras's, at export). */
  async selfCheck() {
    const golden = this.meta.golden;
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
    return {
      status: passed ? "pass" : "fail",
      maxAbs,
      atol: golden.atol,
      perOutput,
      ms,
      message: `${passed ? "pass" : "FAIL"}: max abs ${maxAbs.toPrecision(3)} (tolerance ${Math.max(golden.atol, ...Object.values(golden.atols || {})).toPrecision(3)}) on ${samples} stored sample(s), ${ms.toFixed(2)} ms`,
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
