"""Text models, the side that needs neither Keras nor TensorFlow: what is read as data.

Here: the check of a ``TextVectorization`` config (the file's JSON, before Keras sees it: only settings the
tokenizers follow, no callable, no file), the test strings both sides get (``probe_texts``), the one line
``edgeattn inspect`` shows for a stored spec, and the texts ``edgeattn predict`` reads from a file or stdin.
The Keras side (the layer in a loaded model, the spec, the parity check on strings) is
``edgeattn.convert.textmodel``.
"""

from __future__ import annotations

import json

import numpy as np

from edgeattn.core.errors import InputError, require_file
from edgeattn.tokenizer import SPLIT, STANDARDIZE

# Config keys of a TextVectorization that may hold a string, and the values each may take.
STRING_SETTINGS = {
    "standardize": STANDARDIZE,
    "split": SPLIT,
    "output_mode": ("int",),
    "encoding": ("utf-8",),
    "dtype": ("float32", "float16", "bfloat16", "float64", "string", "mixed_float16", "mixed_bfloat16"),
}


# -- the config, as data ----------------------------------------------------------------------------------


def config_problem(config) -> str | None:
    """Why a ``TextVectorization`` config (the file's JSON) is refused, or None. Nothing is deserialized."""
    if not isinstance(config, dict):
        return "its config is not a JSON object"
    for key in ("standardize", "split"):
        value = config.get(key, STANDARDIZE[1] if key == "standardize" else SPLIT[1])
        if value not in STRING_SETTINGS[key]:
            what = "a custom callable" if not isinstance(value, str) else repr(value)
            return (
                f"{key} is {what}; edgeattn exports only {', '.join(map(str, STRING_SETTINGS[key]))} "
                "(code from the model file is never run)"
            )
    if config.get("output_mode", "int") != "int":
        return f"output_mode is {config.get('output_mode')!r}; edgeattn exports only output_mode='int'"
    if config.get("ngrams") is not None:
        return f"ngrams is {config.get('ngrams')!r}; edgeattn exports only ngrams=None"
    vocabulary = config.get("vocabulary")
    if isinstance(vocabulary, str):
        return f"its vocabulary names the file {vocabulary!r}; only a vocabulary stored in the model is read"
    if vocabulary is not None and not (
        isinstance(vocabulary, list) and all(isinstance(t, str) for t in vocabulary)
    ):
        return "its vocabulary is not a list of strings"
    if config.get("idf_weights") is not None:
        return "it holds idf_weights (tf-idf), which output_mode='int' does not use"
    if config.get("ragged") or config.get("sparse"):
        return "ragged or sparse output is not a dense tensor of token ids"
    for key, value in config.items():
        if isinstance(value, str) and key != "name" and value not in STRING_SETTINGS.get(key, ()):
            return f"its setting {key}={value!r} is a string edgeattn does not know (it could name a file)"
    return None


# -- the strings both sides get ---------------------------------------------------------------------------

FIXED_TEXTS = (
    "",
    " ",
    "Hello, World! (Hello again.)",
    "UPPER lower MiXeD CaSe",
    "zzqx unknownword qwertyuiop",
    "İstanbul ÉCOLE naïve Σίσυφος 東京 café 👍🏽 e\u0301",
    "tabs\tand\nnewlines\rand\x0bvertical\x0cfeeds",
    "no\u00a0break\u3000ideographic\u2028line\x1cunit\x85next",
    'a,b-c.d\'e [x] (y) {z} "q" ~_^ `|\\/@#$%*+=<>;:?! – “dash” ¿qué? …',
)


def probe_texts(spec: dict, seed: int = 0, count: int = 24) -> list[str]:
    """Test strings: punctuation, case, unknown words, empty strings, unicode and odd whitespace, texts longer
    than the sequence length, and seeded sentences of the vocabulary's own tokens (cased and punctuated)."""
    rng = np.random.default_rng(seed)
    tokens = [t for t in spec["vocabulary"][2:] if t] or ["a"]
    glue = "" if spec.get("split") == "character" else " "
    longest = spec.get("output_sequence_length") or 20
    texts = list(FIXED_TEXTS)
    texts.append(glue.join(tokens[i % len(tokens)] for i in range(3 * longest + 1)))  # longer than the length
    texts.extend(tokens[:3])
    for _ in range(count):
        words = [str(rng.choice(tokens)) for _ in range(int(rng.integers(1, longest + 3)))]
        words = [
            w.upper() if rng.random() < 0.15 else w.capitalize() if rng.random() < 0.2 else w for w in words
        ]
        words = [w + str(rng.choice(list(",.!?;:'\")"))) if rng.random() < 0.2 else w for w in words]
        if rng.random() < 0.2:
            words.insert(int(rng.integers(len(words) + 1)), "unknownish")
        seps = [str(rng.choice([" ", " ", " ", "  ", "\t", "\n"])) if glue else "" for _ in words]
        texts.append("".join(w + s for w, s in zip(words, seps)).strip(" ") if glue else "".join(words))
    return texts


def describe_spec(text: str) -> str:
    """One line for a stored spec (``edgeattn inspect``)."""
    try:
        spec = json.loads(text)
        return (
            f"TextVectorization {spec['layer']!r}: standardize {spec['standardize']}, split {spec['split']}, "
            f"output_sequence_length {spec['output_sequence_length']}, {len(spec['vocabulary']):,} tokens "
            f"(mask {spec['mask_token']!r} {spec['mask_index']}, OOV {spec['oov_token']!r} {spec['oov_index']}), "
            f"Keras's ids on {len(spec.get('examples', []))} example texts"
        )
    except (ValueError, KeyError, TypeError):
        return "(not a readable text spec)"


# -- text input for `edgeattn predict` --------------------------------------------------------------------


def read_texts(path) -> list[str]:
    """Texts from a ``.json`` file (a list of strings), a ``.txt`` file (one text per line) or ``-`` (stdin:
    a JSON list, else one text per line)."""
    import sys

    if str(path) == "-":
        raw, where, as_json = sys.stdin.read(), "stdin", None
    else:
        path = require_file(
            path, "a text file", hint="give a .txt (one text per line) or a .json list of strings"
        )
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
        where, as_json = str(path), path.suffix.lower() == ".json"
    if as_json or (as_json is None and raw.lstrip().startswith("[")):
        try:
            texts = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InputError(f"{where}: a text model takes a JSON list of strings")
    else:
        texts = raw.split("\n")
        if texts and texts[-1] == "":
            texts.pop()  # the file's last newline ends the last line
        texts = [t[:-1] if t.endswith("\r") else t for t in texts]
    if not texts:
        raise InputError(f"{where} holds no texts")
    return texts
