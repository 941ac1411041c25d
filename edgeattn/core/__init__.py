"""Shared ground: the errors and their exit codes (``errors``), the defaults every side agrees on (``defaults``),
atomic file writes and the checks on what is read and written (``files``), array files in and out
(``arrays``), and isolated child processes (``sandbox``). (The text tokenizer is ``edgeattn/tokenizer.py``, beside
``runtime.py``: the two files an app may copy.)

What it may import: the standard library and numpy only; nothing of the other folders (graphs, deploy,
convert, cli), and no TensorFlow, onnx or onnxruntime. Every other folder may import this one.
"""
