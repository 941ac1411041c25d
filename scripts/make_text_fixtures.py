"""Make the text-model fixtures of tests/test_text.py (Keras 3; run with .venv/bin/python).

tests/fixtures/text/
  text-classifier.keras   TextVectorization (lower_and_strip_punctuation, whitespace, length 16) -> token and
                          position Embeddings -> a transformer encoder block (MultiHeadAttention, LayerNorm,
                          feed-forward) -> GlobalAveragePooling1D -> Dense(3, softmax), trained on a tiny
                          synthetic corpus (topic of the sentence: weather, food, sport)
  char-lstm.keras         TextVectorization (lower, character split, output_sequence_length None: a free time
                          axis) -> Embedding -> LSTM -> Dense(1, sigmoid) (does the text mention a number word)
  *.npz                   Keras's own reference, computed here by TensorFlow: ``texts`` (the test strings),
                          ``tokens`` (the TextVectorization layer's output on them, one batch), ``outputs`` (the
                          model's outputs on them, one batch)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "text"
TOPICS = {
    "weather": "rain sun cloud wind storm snow cold warm sky fog".split(),
    "food": "bread soup apple cheese rice pasta salad cake tea coffee".split(),
    "sport": "ball goal match team race score coach runner tennis football".split(),
}
FILLER = "the a today i we saw some very big small and with of good bad".split()
NUMBERS = "one two three four five six seven eight nine ten".split()
# The strings both references are computed on: punctuation, case, unknown words, empty strings, unicode,
# odd whitespace, texts longer than the sequence length.
TEST_TEXTS = [
    "The rain and the wind, today!",
    "CHEESE soup & bread... (very good)",
    "Goal! Goal!! The TEAM won the match.",
    "",
    "   ",
    "zebra quantum xylophone",
    "Ünïcödé café — “quoted” naïve İstanbul Σίσυφος 東京 👍🏽",
    "tabs\tand\nnewlines\rand\x0bvertical\x0cfeeds",
    "no\u00a0break\u3000ideographic space",
    "self-made, state-of-the-art: it's [x] {y} <z> a_b ~ ^ ` | \\ / @ # $ % * + =",
    "rain " * 40,
    "the coach and the runner saw a race, then tea and cake, then snow; one two three four five six seven",
    "Seven cakes, EIGHT apples and nine cups of tea",
    "storm",
]


def corpus(rng, n: int):
    texts, labels, numbers = [], [], []
    names = list(TOPICS)
    for _ in range(n):
        label = int(rng.integers(len(names)))
        words = list(rng.choice(TOPICS[names[label]], size=int(rng.integers(2, 5))))
        words += list(rng.choice(FILLER, size=int(rng.integers(1, 6))))
        has_number = bool(rng.random() < 0.5)
        if has_number:
            words.append(str(rng.choice(NUMBERS)))
        rng.shuffle(words)
        text = " ".join(w.capitalize() if rng.random() < 0.2 else w for w in words)
        texts.append(text + str(rng.choice(["", ".", "!", "?", ","])))
        labels.append(label)
        numbers.append(float(has_number))
    return np.array(texts, dtype=object), np.array(labels), np.array(numbers, np.float32)


def dataset(texts, targets):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((tf.constant(list(texts))[:, None], targets)).batch(32)


def text_classifier(texts, labels, length: int = 16, dim: int = 16):
    L = keras.layers
    vectorize = L.TextVectorization(output_sequence_length=length, name="vectorize")
    vectorize.adapt(texts)
    inp = keras.Input((1,), dtype="string", name="text")
    tokens = vectorize(inp)
    positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) - 1  # 0, 1, 2, ... as Keras ops
    x = L.Embedding(vectorize.vocabulary_size(), dim, name="token_embedding")(tokens)
    x = L.Add()([x, L.Embedding(length, dim, name="position_embedding")(positions)])
    attended = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(x, x)
    x = L.LayerNormalization(name="norm_1")(L.Add()([x, attended]))
    ff = L.Dense(dim, name="ff_out")(L.Dense(32, activation="relu", name="ff_in")(x))
    x = L.LayerNormalization(name="norm_2")(L.Add()([x, ff]))
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, L.Dense(3, activation="softmax", name="topic")(x), name="text_classifier")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(dataset(texts, labels), epochs=6, verbose=0)
    return model


def char_lstm(texts, numbers):
    L = keras.layers
    vectorize = L.TextVectorization(standardize="lower", split="character", name="chars")
    vectorize.adapt(texts)
    inp = keras.Input((1,), dtype="string", name="text")
    x = L.Embedding(vectorize.vocabulary_size(), 8, name="char_embedding")(vectorize(inp))
    x = L.LSTM(16, name="lstm")(x)
    model = keras.Model(inp, L.Dense(1, activation="sigmoid", name="has_number")(x), name="char_lstm")
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    model.fit(dataset(texts, numbers), epochs=3, verbose=0)
    return model


def save(model, name: str) -> None:
    path = OUT / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # the reference is the file's model, as loaded
    vectorize = loaded.layers[1]
    batch = np.array(TEST_TEXTS, dtype=object)[:, None]
    tokens = np.asarray(vectorize(batch))
    outputs = np.asarray(loaded(batch, training=False))
    np.savez(OUT / f"{name}.npz", texts=np.array(TEST_TEXTS), tokens=tokens, outputs=outputs)
    print(f"{path.name}: {path.stat().st_size:,} bytes, tokens {tokens.shape}, outputs {outputs.shape}")


def main() -> int:
    keras.utils.set_random_seed(7)
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    texts, labels, numbers = corpus(rng, 600)
    classifier = text_classifier(texts, labels)
    print("classifier accuracy", classifier.evaluate(dataset(texts, labels), verbose=0)[1])
    save(classifier, "text-classifier")
    lstm = char_lstm(texts[:300], numbers[:300])
    print("char-lstm accuracy", lstm.evaluate(dataset(texts[:300], numbers[:300]), verbose=0)[1])
    save(lstm, "char-lstm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
