"""Streaming beside the Predictor, numpy and runtime.py only (this file goes beside it, in the package or in an
app). ``StreamSpec`` reads a stream model's ``edgeattn.stream`` metadata (kind "step": a time step per run, or
"stateful": a chunk; data inputs and outputs; states, each a graph input fed the output ``<input>_next`` of the
run before); ``Stream`` runs it push by push (``Predictor.stream()``); ``Window`` streams a whole-window model
(``Predictor.window(T)``). Each holds its own states and buffers: one per caller; any number share a Predictor.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass

import numpy as np

rt = importlib.import_module(f"{__package__}.runtime" if __package__ else "runtime")


@dataclass(frozen=True)
class State:
    """A carried state: graph input ``input``, per-sample ``shape`` (None first if it grows, from length 0)."""

    input: str
    output: str
    layer: str
    shape: tuple
    dtype: np.dtype
    grows: bool

    def zeros(self, batch: int) -> np.ndarray:
        return np.zeros((batch, *(0 if d is None else d for d in self.shape)), self.dtype)


@dataclass(frozen=True)
class StreamSpec:
    """A stream model's ``edgeattn.stream`` metadata, checked against its graph by ``read``."""

    kind: str
    max_steps: int | None
    inputs: tuple  # the data inputs' TensorSpecs, in graph order
    outputs: tuple  # the data outputs' names, in graph order
    states: tuple  # State, in graph order

    @classmethod
    def read(cls, predictor) -> StreamSpec:
        name, key = os.path.basename(predictor.path), rt.STREAM_KEY
        try:
            meta = json.loads(predictor.metadata[key])
            kind, inputs, outputs, states = meta["kind"], meta["inputs"], meta["outputs"], meta["states"]
            ins, outs = {s.name: s for s in predictor.inputs}, {s.name for s in predictor.outputs}
            carried = [cls._state(s, ins, outs) for s in states]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{name}: its {key} metadata does not fit the model ({exc})") from None
        data, names = [ins.get(n) for n in inputs], {s.input for s in carried}
        if kind not in ("step", "stateful"):
            raise ValueError(f"{name}: {key} kind must be step or stateful, got {kind!r}")
        if None in data or not data or set(inputs) | names != set(ins) or set(inputs) & names:
            raise ValueError(f"{name}: {key} data inputs {inputs} and states do not cover its {list(ins)}")
        if not outputs or any(n not in outs for n in outputs):
            raise ValueError(f"{name}: {key} names data outputs {outputs} that it lacks")
        return cls(kind, meta.get("max_steps"), tuple(data), tuple(outputs), tuple(carried))

    @staticmethod
    def _state(s: dict, ins: dict, outs: set) -> State:
        if s["input"] not in ins or s["output"] not in outs:
            raise ValueError(f"state {s['input']!r} -> {s['output']!r}: no such graph input or output")
        spec, grows, shape = ins[s["input"]], bool(s.get("grows")), tuple(s["shape"])
        fixed, graph = (shape[1:], spec.shape[2:]) if grows else (shape, spec.shape[1:])
        fits = all(type(d) is int and (type(g) is not int or g == d) for g, d in zip(graph, fixed))
        if not fits or len(shape) != len(spec.shape) - 1 or (grows and shape[0] is not None):
            raise ValueError(f"state {spec.name!r}: shape {list(shape)} does not fit the graph's {spec}")
        return State(spec.name, s["output"], str(s.get("layer", "")), shape, spec.dtype, grows)

    def zeros(self, batch: int) -> dict:
        """The initial states for ``batch`` samples, by input name: zeros (growing states: length 0)."""
        return {s.input: s.zeros(batch) for s in self.states}

    def complete(self, x):
        """``Predictor._feed``'s input: the states left out as zeros, an array as the data input (else as it came)."""
        if isinstance(x, dict):
            first = x.get(self.inputs[0].name)
            if first is None or all(s.input in x for s in self.states):
                return x
        elif len(self.inputs) == 1:
            first, x = x, {self.inputs[0].name: x}
        else:
            return x
        shape = () if isinstance(first, (str, bytes)) else np.shape(first)
        return {**self.zeros(shape[0]), **x} if shape else x


def _batch_error(what: str, batch: int, got: int) -> ValueError:
    why = f"this {what} runs batch {batch} (set by its first push), got batch {got}"
    return ValueError(f"{why}: call reset() first, or use one {what} per batch")


def _numbers(name: str, x) -> np.ndarray:
    """``x`` as an array (``Predictor._check`` then refuses non-numbers); its errors for strings, ragged lists."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"input {name!r} must be numbers, got a string")
    try:
        return np.asarray(x)
    except ValueError as exc:
        raise ValueError(f"input {name!r}: nested lists of unequal lengths ({exc})") from None


def _bind(session, inputs, outputs) -> tuple:
    """(run, arg): ``run(arg, None)`` runs ``session`` on an IOBinding of these (name, numpy buffer) pairs."""
    binding = session.io_binding()
    for bind, pairs in ((binding.bind_input, inputs), (binding.bind_output, outputs)):
        for name, buf in pairs:
            bind(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
    return rt._bound_runner(session, binding)


class Stream:
    """A stream model run push by push, the states carried (zeros at the start and after ``reset()``; growing ones
    of length 0). ``push(x)`` runs a step (kind "step": x ``(F...)``, one sample, ``(batch, F...)`` or ``(batch,
    1, F...)``) or a chunk ("stateful": ``(T, F...)`` or ``(batch, T, F...)``), a dict of them for several data
    inputs; it returns the first data output as ``predict`` does, of a step model an output ``(batch, 1, ...)``
    (rank 3 or more) without axis 1, of one sample without the batch axis. ``outputs``: every data output of the
    last push; ``state``: a copy of the states the next push starts from. The first push sets the batch."""

    def __init__(self, predictor) -> None:
        if predictor._stream is None:
            why = f"{os.path.basename(predictor.path)} is not a stream model (it has no {rt.STREAM_KEY} metadata)"
            how = "export one with `edgeattn export --streaming`; Predictor.window(T) streams a whole-window model"
            raise ValueError(f"{why}: {how}")
        self.predictor, self.spec = predictor, predictor._stream
        self.kind, self._session, self._n = self.spec.kind, predictor._session, len(self.spec.outputs)
        self._names = [*self.spec.outputs, *(s.output for s in self.spec.states)]
        self._carried = [s.input for s in self.spec.states]
        self._run = getattr(self._session, "_sess", self._session).run  # onnxruntime's C++ entry, if there
        # Bound: per input shape two IOBindings, the states in two buffer sets the runs alternate between (set
        # k in, set 1-k out; no state is copied). A growing state changes shape each step: session.run.
        self._bound = predictor.io_binding and not any(s.grows for s in self.spec.states)
        self._lanes: dict = {}  # input shapes -> (fill, runs, last, first view, fills, feed, unbatched)
        self._batch, self._fresh, self._last = None, True, None  # fresh: no push since the start or reset
        self._sets, self._cur, self._states = [], 0, []  # bound: [set 0, set 1] and the current; unbound

    def __repr__(self) -> str:
        states = ", ".join(self._carried)
        return f"Stream({os.path.basename(self.predictor.path)!r}, kind={self.kind!r}, states=[{states}])"

    @property
    def state(self) -> dict:
        """A copy of the states the next push starts from, by state input name ({} before the first push)."""
        return {
            n: a.copy() for n, a in zip(self._carried, self._sets[self._cur] if self._sets else self._states)
        }

    @property
    def outputs(self) -> dict:
        """Every data output of the last push, by name, shaped as ``push`` returns the first ({} before one)."""
        if self._last is None:
            return {}
        return {n: self._view(o, self._last[1]).copy() for n, o in zip(self.spec.outputs, self._last[0])}

    def reset(self) -> None:
        """Back to the initial states; the next push may change the batch."""
        self._fresh, self._last = True, None
        for states in self._sets:
            for a in states:
                a.fill(0)
        if self._batch is not None and not self._sets:
            self._states = list(self.spec.zeros(self._batch).values())

    def push(self, x):
        """Run one step (or chunk) from the carried states; the first data output (see the class)."""
        lane = self._lanes.get(x.shape) if type(x) is np.ndarray else None
        if lane is None or not lane[0](x):  # not an array of a known shape and dtype, finite: the checked way
            return self._push(x)
        return self._go(lane)

    def _go(self, lane):
        """A push on a lane, its inputs in: bound, a binding's run; else session.run on its buffers."""
        if lane[1] is not None:
            run, arg = lane[1][self._cur]
            run(arg, None)
            self._cur ^= 1
            self._fresh, self._last = False, lane[2]
            return lane[3].copy()
        feed = lane[5]
        feed.update(zip(self._carried, self._states))
        outs = self._run(self._names, feed, None)
        self._states, self._fresh, self._last = outs[self._n :], False, (outs[: self._n], lane[6])
        return self._view(outs[0], lane[6]).copy()  # not the array ``outputs`` reads

    def _push(self, x):
        arrays, unbatched = self._arrays(x)  # in the model's shapes
        if (batch := arrays[0].shape[0]) != self._batch:
            if self._batch is not None and not self._fresh:
                raise _batch_error("Stream", self._batch, batch)
            self._batch, self._lanes, self._cur, zeros = batch, {}, 0, list(self.spec.zeros(batch).values())
            self._sets, self._states = (
                ([zeros, [a.copy() for a in zeros]], []) if self._bound else ([], zeros)
            )
        single = not isinstance(x, dict)
        shapes = [np.shape(x) if single else np.shape(x[s.name]) for s in self.spec.inputs]
        key = shapes[0] if single else tuple(shapes)
        lane = self._lanes.get(key) or self._lane(key, shapes, arrays, unbatched)
        if not all(fill(a.reshape(s)) for fill, a, s in zip(lane[4], arrays, shapes)):
            raise TypeError(f"inputs of dtypes {[a.dtype.name for a in arrays]} do not fit their buffers")
        return self._go(lane)

    def _arrays(self, x) -> tuple[list, bool]:
        """The data inputs, checked, in the model's shapes; and whether they came without a batch axis."""
        specs, step = self.spec.inputs, self.kind == "step"
        if isinstance(x, dict):
            names = [s.name for s in specs]
            if wrong := [k for k in x if k not in names]:
                why = (
                    "a Stream carries its states"
                    if not set(wrong) - set(self._carried)
                    else "no such data input"
                )
                raise ValueError(f"push takes the data inputs ({', '.join(names)}), not {wrong}: {why}")
            if missing := [n for n in names if n not in x]:
                raise ValueError(f"missing input(s): {', '.join(missing)}")
            given = [x[n] for n in names]
        elif len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise ValueError(f"this model has {len(specs)} data inputs ({names}); push a dict of arrays")
        else:
            given = [x]
        arrays, forms = [], set()
        for spec, value in zip(specs, given):
            arr, rank, features = _numbers(spec.name, value), len(spec.shape), spec.shape[2:]
            lead = rank - arr.ndim  # the leading axes left out: batch (and, of a step, its time axis)
            tail = arr.shape[len(arr.shape) - len(features) :] if arr.ndim >= len(features) else ()
            if not 0 <= lead <= 1 + step or any(type(d) is int and d != g for d, g in zip(features, tail)):
                one = f"one step of shape {features}" if step else f"a chunk of shape (time, *{features})"
                where = "for one sample or with a batch axis first"
                raise ValueError(f"push: input {spec.name!r} takes {one}, {where}; got shape {arr.shape}")
            if step and lead == 0 and arr.shape[1] != 1:
                raise ValueError(f"push: a step model takes one step at a time; {spec.name!r}: {arr.shape}")
            unbatched = lead == 1 + step
            shape = (1, *arr.shape) if unbatched else arr.shape
            shape = (shape[0], 1, *shape[1:]) if step and lead else shape
            arrays.append(self.predictor._check(spec, arr.reshape(shape)))
            forms.add((unbatched, shape[0]))
        if len(forms) > 1:
            raise ValueError("push: the data inputs must have one batch (or all be one sample)")
        return arrays, forms.pop()[0]

    def _view(self, out: np.ndarray, unbatched: bool) -> np.ndarray:
        """An output as push returns it (a view): a step's (batch, 1, ...) without axis 1, one sample's without 0."""
        if self.kind == "step" and out.ndim >= 3 and out.shape[1] == 1:
            out = out.reshape(out.shape[:1] + out.shape[2:])
        return out[0] if unbatched else out

    def _lane(self, key, shapes, arrays, unbatched) -> tuple:
        """Input buffers, a fill each (checks an array of the caller's shape, copies it in); bound, two IOBindings,
        the state sets crossed. A first run tells the output shapes, and that the state outputs fit."""
        feed = dict(zip((s.name for s in self.spec.inputs), arrays))
        feed.update(zip(self._carried, self._sets[self._cur] if self._sets else self._states))
        outs, batch = self._run(self._names, feed, None), arrays[0].shape[0]
        for s, got in zip(self.spec.states, outs[self._n :]):
            if got.ndim != 1 + len(s.shape) or got.shape[:1] + got.shape[1 + s.grows :] != (
                batch,
                *s.shape[s.grows :],
            ):
                why = f"{got.shape}, not (batch, *{s.shape}): the model breaks its {rt.STREAM_KEY} contract"
                raise ValueError(f"state output {s.output!r} has shape {why}")
        if (
            len(self._lanes) >= 8
        ):  # chunks of many lengths: keep the buffers of 8 at most, as the Predictor does
            self._lanes.clear()
        check, inputs = not self.predictor.allow_nonfinite, [np.empty_like(a) for a in arrays]
        fills = [rt._filler(b.reshape(s), check and b.dtype.kind == "f") for b, s in zip(inputs, shapes)]
        fill = fills[0] if all(type(d) is int for d in key) else _never  # the key of an array: its shape
        data = list(zip((s.name for s in self.spec.inputs), inputs))
        if not self._sets:
            self._lanes[key] = (fill, None, None, None, fills, dict(data), unbatched)
            return self._lanes[key]
        results = [np.empty_like(o) for o in outs[: self._n]]
        runs = [_bind(self._session, [*data, *zip(self._carried, self._sets[k])],
                      list(zip(self._names, [*results, *self._sets[k ^ 1]]))) for k in (0, 1)]  # fmt: skip
        first = self._view(results[0], unbatched)
        self._lanes[key] = (fill, runs, (results, unbatched), first, fills, None, unbatched)
        return self._lanes[key]


def _never(x) -> bool:
    return False


class Window:
    """A whole-window model streamed: ``push(x_t)`` appends a step (``(F...)``, one sample, or ``(batch, F...)``)
    and returns the first output on the last ``steps`` steps, exactly ``predictor.predict(window)`` (``[0]`` of it
    for one sample); None before ``steps`` steps (``ready``). ``outputs``: every output of the last push. The
    steps go one after the other into a buffer of 2 x ``steps`` (the last ``steps`` - 1 moved back to its start
    when it is full), so a window is one contiguous slice, each with its IOBinding at batch 1: only the step is
    copied. The first push sets the batch (another raises ``ValueError`` until ``reset()``). One per caller."""

    def __init__(self, predictor, steps: int | None = None) -> None:
        name, ins = os.path.basename(predictor.path), predictor.inputs
        if predictor._stream is not None:
            raise ValueError(f"{name} is a stream model ({predictor._stream.kind}): use Predictor.stream()")
        if len(ins) != 1 or len(ins[0].shape) < 2 or not all(type(d) is int for d in ins[0].shape[2:]):
            got = ", ".join(map(str, ins))
            raise ValueError(f"Predictor.window takes one input (batch, time, features...); {name}: {got}")
        spec, time = ins[0], ins[0].shape[1]
        if steps is not None and (type(steps) is not int or steps < 1):
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if type(time) is int and steps not in (None, time):
            raise ValueError(f"{name} takes windows of {time} steps (its time axis is fixed), not {steps}")
        if type(time) is not int and steps is None:
            raise ValueError(f"{name}'s time axis is free ({time}): give the length, Predictor.window(steps)")
        self.predictor, self.steps, self._spec, self._step = predictor, steps or time, spec, spec.shape[2:]
        self._names, self._batch, self._end = [o.name for o in predictor.outputs], None, 2 * self.steps - 1
        self._fills = [_never] * 2 * self.steps
        self.reset()

    @property
    def ready(self) -> bool:
        """Whether ``steps`` steps were pushed since the start or the last reset (push predicts)."""
        return self._last is not None

    @property
    def outputs(self) -> dict:
        """Every output of the model on the last push's window, by name ({} before one)."""
        if self._last is None:
            return {}
        return {n: (o[0] if self._last[1] else o).copy() for n, o in zip(self._names, self._last[0])}

    def reset(self) -> None:
        """Forget the steps pushed; the next push may change the batch."""
        self._i, self._last, self._accept = 0, None, {}

    def push(self, x):
        """Append one step; the first output on the last ``steps`` steps, or None before there are as many."""
        i = self._i  # where the step goes
        unbatched = self._accept.get(x.shape) if type(x) is np.ndarray else None
        if unbatched is None or not self._fills[i](x):  # not bound, or not a known shape, dtype, finite
            return self._push(x)
        run = self._runs[i] or self._lane(i)
        if run is None:  # fewer than steps steps
            self._i = i + 1
            return None
        run[0](run[1], None)
        self._i = i + 1 if i < self._end else self._shift()
        self._last = run[5] if unbatched else run[4]
        return (run[3] if unbatched else run[2]).copy()

    def _push(self, x):
        arr, step, spec = _numbers(self._spec.name, x), self._step, self._spec
        if arr.ndim not in (len(step), len(step) + 1) or arr.shape[arr.ndim - len(step) :] != step:
            why = f"one step of shape {step}, for one sample or with a batch axis first"
            raise ValueError(f"push: input {spec.name!r} takes {why}; got shape {arr.shape}")
        unbatched = arr.ndim == len(step)
        one = rt.TensorSpec(spec.name, ("batch", 1, *step), spec.dtype)  # the Predictor's checks, on a step
        arr = self.predictor._check(one, arr.reshape(-1, 1, *step)).reshape(arr.shape)
        if (batch := 1 if unbatched else arr.shape[0]) != self._batch:
            if self._batch is not None and (self._i or self._last is not None):
                raise _batch_error("Window", self._batch, batch)
            self._start(batch)
        self._accept[arr.shape] = unbatched
        if self._fills[0] is not _never:
            return self.push(np.ascontiguousarray(arr))
        i, t = self._i, self.steps
        self._buf[:, i], self._i = arr.reshape(batch, *step), i + 1
        if i + 1 < t:
            return None
        outs = self.predictor.run(np.ascontiguousarray(self._buf[:, i + 1 - t : i + 1]))
        self._i, self._last = i + 1 if i < self._end else self._shift(), (outs, unbatched)
        return (outs[0][0] if unbatched else outs[0]).copy()

    def _shift(self) -> int:
        """The buffer is full: its last steps - 1 steps go to its start; where the next step goes, after them."""
        self._buf[:, : self.steps - 1] = self._buf[:, self.steps + 1 :]
        return self.steps - 1

    def _start(self, batch: int) -> None:
        self._batch, t, dtype = batch, self.steps, self._spec.dtype
        self._buf = np.zeros((batch, 2 * t, *self._step), dtype)
        self._runs, self._results, self._fills = [None] * 2 * t, None, [_never] * 2 * t
        if self.predictor.io_binding and batch == 1:  # a fill per position: checks a step, copies it in
            check = not self.predictor.allow_nonfinite and dtype.kind == "f"
            self._fills = [rt._filler(self._buf[0, i], check) for i in range(2 * t)]

    def _lane(self, i: int):
        """The run on the window that ends at position i (None before one): an IOBinding on that slice."""
        if i + 1 < self.steps:
            return None
        window = self._buf[:, i + 1 - self.steps : i + 1]
        if self._results is None:  # the first run tells the output shapes
            outs = self.predictor._session.run(self._names, {self._spec.name: window})
            self._results = [np.empty_like(o) for o in outs]
        session, out = self.predictor._session, self._results[0]
        run = _bind(session, [(self._spec.name, window)], list(zip(self._names, self._results)))
        self._runs[i] = (*run, out, out[0], (self._results, False), (self._results, True))
        return self._runs[i]
