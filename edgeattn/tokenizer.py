"""Strings -> token ids exactly as Keras 3's ``TextVectorization`` (``output_mode="int"``) computes them, in pure
Python: no TensorFlow, no numpy, nothing from edgeattn. Copy it into an application beside ``runtime.py``.

The rules come from the ONNX file (``metadata_props`` key ``edgeattn.text``, JSON, written by ``edgeattn
export``), and each was measured against TensorFlow 2.21 / Keras 3.15:

- ``lower``: ``tf.strings.lower`` as Keras calls it (no encoding) lowercases ASCII ``A-Z`` only: ``É``, ``Σ``
  and ``İ`` stay as they are.
- ``strip_punctuation``: Keras's regex ``[!"#$%&()\\*\\+,-\\./:;<=>?@\\[\\\\\\]^_`{|}~\\']`` (``,-\\.`` is the
  range ``,`` ``-`` ``.``) removes exactly the 32 ASCII punctuation characters (Python's
  ``string.punctuation``); Unicode punctuation (``–``, ``“``, ``¿``, ``…``) stays.
- ``whitespace`` split: ``tf.strings.split`` splits on runs of ASCII space, ``\\t \\n \\v \\f \\r`` only (not on
  U+00A0, U+3000, U+2028, ``\\x1c``-``\\x1f`` or U+0085, which Python's ``str.split`` would take), and drops
  leading, trailing and empty pieces.
- ``character`` split: Unicode code points (``tf.strings.unicode_split``), combining marks on their own.
- no split: the whole standardized string is one token.
- lookup: the index in the vocabulary (mask token ``""`` at 0, OOV token ``[UNK]`` at 1); a token that is not
  in the vocabulary gets the OOV index; an empty token (no split, empty text) the mask index.
- ``output_sequence_length``: truncate or pad with 0 to it; None: pad to the longest text of the batch (a batch
  of texts with no tokens has width 0).

    tokenizer = Tokenizer.from_json(predictor.metadata["edgeattn.text"])
    ids = tokenizer(["A text.", "another one"])     # list of equal-length lists of ints
"""

from __future__ import annotations

import json

SPEC_VERSION = 1
STANDARDIZE = (None, "lower_and_strip_punctuation", "lower", "strip_punctuation")
SPLIT = (None, "whitespace", "character")
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
WHITESPACE = " \t\n\x0b\x0c\r"
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_STRIP = str.maketrans("", "", PUNCTUATION)
_SPACES = str.maketrans(WHITESPACE[1:], " " * (len(WHITESPACE) - 1))


class Tokenizer:
    """The tokenizer a text model's ``edgeattn.text`` spec describes (see the module docstring)."""

    def __init__(self, spec: dict) -> None:
        if not isinstance(spec, dict) or spec.get("version") != SPEC_VERSION:
            raise ValueError(f"not an edgeattn text spec of version {SPEC_VERSION}")
        self.standardize_mode = spec.get("standardize")
        self.split_mode = spec.get("split")
        if self.standardize_mode not in STANDARDIZE or self.split_mode not in SPLIT:
            raise ValueError(
                f"unknown standardize {self.standardize_mode!r} or split {self.split_mode!r} in the text spec"
            )
        if spec.get("num_oov_indices", 1) != 1:
            raise ValueError("the text spec has several OOV indices, which this tokenizer does not hash")
        vocabulary = spec.get("vocabulary")
        if not isinstance(vocabulary, list) or not all(isinstance(t, str) for t in vocabulary):
            raise ValueError("the text spec's vocabulary is not a list of strings")
        self.length = spec.get("output_sequence_length")
        if self.length is not None and not (
            isinstance(self.length, int) and not isinstance(self.length, bool) and 0 < self.length <= 1 << 20
        ):
            raise ValueError(f"the text spec's output_sequence_length {self.length!r} is not a length")
        self.mask_token = spec.get("mask_token", "")
        self.mask_index = int(spec.get("mask_index", 0))
        self.oov_index = int(spec.get("oov_index", 1))
        self.pad_index = int(spec.get("pad_index", 0))
        self.vocabulary = list(vocabulary)
        self.index = {}
        for i, token in enumerate(self.vocabulary):
            self.index.setdefault(token, i)
        # the special tokens map to their indices only through the rules above (as in Keras)
        self.index.pop(spec.get("oov_token", "[UNK]"), None)
        self.index.pop(self.mask_token, None)

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        return cls(json.loads(text))

    def standardize(self, text: str) -> str:
        if self.standardize_mode in ("lower", "lower_and_strip_punctuation"):
            text = text.translate(_LOWER)
        if self.standardize_mode in ("strip_punctuation", "lower_and_strip_punctuation"):
            text = text.translate(_STRIP)
        return text

    def split(self, text: str) -> list[str]:
        if self.split_mode == "whitespace":
            return [piece for piece in text.translate(_SPACES).split(" ") if piece]
        if self.split_mode == "character":
            return list(text)
        return [text]

    def ids(self, text: str) -> list[int]:
        """One text's token ids, neither padded nor truncated."""
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
        lookup, oov = self.index.get, self.oov_index
        return [
            self.mask_index if token == self.mask_token else lookup(token, oov)
            for token in self.split(self.standardize(text))
        ]

    def __call__(self, texts) -> list[list[int]]:
        """Token ids of a batch of texts, padded with 0 (or truncated) to ``output_sequence_length``, or to the
        longest text of the batch when that is None."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("pass a list of strings (a batch), not one string")
        rows = [self.ids(text) for text in texts]
        width = self.length if self.length is not None else max((len(r) for r in rows), default=0)
        return [r[:width] + [self.pad_index] * (width - len(r)) for r in rows]
