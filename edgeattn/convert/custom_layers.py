"""The user's own layer code, imported because the user named it (``--custom-layers FILE.py`` or a module).

Trust model: code stored inside a model file (a Lambda's bytecode, a class path in a config) is never run.
Code the user names on the command line is the user's own choice, like ``python FILE.py``: edgeattn imports
it and offers Keras the ``keras.layers.Layer`` subclasses (and registered functions) it defines, re-exports or
registers,
under the bare class name (what Keras 2 ``.h5`` configs record) and under the registered name
(``Package>Name``, what ``register_keras_serializable`` gives).

Layer code written for Keras 2 often declares ``call(self, inputs, training)`` with no default; Keras 3 leaves
``training`` out when it is None, so such classes are given a ``training=None`` default here (same for
``mask``). Code written for standalone Keras 2 (``from keras import backend as K``; ``K.dot``, ``K.sum``, ...;
``from keras.engine.topology import Layer``) finds what it expects: before the user's code is imported, the
Keras 2 backend functions that Keras 3 keeps for ``tf.keras.backend`` are added to ``keras.backend`` where it
lacks them (nothing Keras 3 defines is replaced), and ``keras.engine``, ``keras.engine.topology`` and
``keras.engine.base_layer`` name ``Layer`` and ``InputSpec``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

from edgeattn.core.errors import InputError

DEFAULTED = ("training", "mask")
KERAS_MODULES = ("keras.", "tensorflow.", "tf_keras.")


def import_layers(sources) -> dict[str, object]:
    """Import each source (a ``.py`` file or a module name); returns {name: class or function} for Keras."""
    import keras

    registry = keras.saving.get_custom_objects()
    found: dict[str, object] = {}
    lenient: dict[int, object] = {}

    def fixed(obj):
        if id(obj) not in lenient:
            lenient[id(obj)] = _lenient(obj, keras)
        return lenient[id(obj)]

    _keras2_names(keras)
    for source in sources:
        module = _import(str(source))
        defined = {  # defined here or re-exported (a package's ``layers`` module), Keras' own left out
            value.__name__: value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, keras.layers.Layer)
            and not value.__module__.startswith(KERAS_MODULES)
        }
        classes = {id(cls) for cls in defined.values()}
        registered = {name: obj for name, obj in registry.items() if _from(obj, module) or id(obj) in classes}
        if not defined and not registered:
            raise InputError(
                f"--custom-layers {source}: defines no keras.layers.Layer subclass",
                hint="give the file that holds the model's layer classes",
            )
        for name, obj in {**defined, **registered}.items():
            found[name] = fixed(obj)
            found.setdefault(getattr(obj, "__name__", name.split(">")[-1]), found[name])
    return found


def _keras2_names(keras) -> None:
    """What layer code written for standalone Keras 2 imports, where Keras 3 lacks it (see the docstring)."""
    import types

    try:
        from keras._tf_keras.keras import backend as legacy_backend
    except ImportError:  # a Keras without the tf.keras compatibility package: nothing to add
        return
    for name in dir(legacy_backend):
        if not name.startswith("_") and not hasattr(keras.backend, name):
            setattr(keras.backend, name, getattr(legacy_backend, name))
    for name in ("keras.engine", "keras.engine.topology", "keras.engine.base_layer"):
        if name not in sys.modules:
            module = types.ModuleType(
                name, "Keras 2 module names, for old layer code (edgeattn --custom-layers)"
            )
            module.Layer = keras.layers.Layer
            module.InputSpec = keras.layers.InputSpec
            sys.modules[name] = module
    keras.engine = sys.modules["keras.engine"]


def _from(obj, module) -> bool:
    return getattr(obj, "__module__", None) == module.__name__


def _import(source: str):
    looks_like_file = source.endswith(".py") or os.sep in source or "/" in source
    if looks_like_file:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"--custom-layers {source}: no such file")
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise InputError(f"--custom-layers {source}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))  # the file may import its neighbours
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise InputError(
                f"--custom-layers {source} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            sys.path.remove(str(path.resolve().parent))
        return module
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        raise InputError(
            f"--custom-layers {source}: no such file or module ({exc})",
            hint="give a path to a .py file, or a module importable from this Python",
        ) from exc
    except Exception as exc:
        raise InputError(f"--custom-layers {source} failed to import: {type(exc).__name__}: {exc}") from exc


def _lenient(cls, keras):
    """``cls`` with a default of None for ``training`` / ``mask`` where Keras 2 code made them required."""
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        return cls
    signature = inspect.signature(cls.call)
    required = [
        p
        for p in DEFAULTED
        if p in signature.parameters and signature.parameters[p].default is inspect.Parameter.empty
    ]
    if not required:
        return cls
    original = cls.call

    def call(self, *args, **kwargs):
        for p in required:
            kwargs.setdefault(p, None)
        return original(self, *args, **kwargs)

    try:
        call.__signature__ = signature.replace(
            parameters=[
                p.replace(default=None) if p.name in required else p for p in signature.parameters.values()
            ]
        )
    except ValueError:  # a parameter without a default follows: leave the class as it is
        return cls
    return type(cls.__name__, (cls,), {"call": call, "__module__": cls.__module__, "__doc__": cls.__doc__})
