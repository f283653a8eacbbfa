r"""Fingerprints: what a run computes, as stable digests, so a checkpoint resumes only its run.

:func:`run_fingerprint` names every component that determines the numbers a run produces --
the word and reduction, the compiled step program, the parameter values, the symbolic
definition *and* the bound callable of every field, the initial state, the grid, the dtype and
device, the noise source, observers and saving -- each as a short string.
:func:`splitsde.runtime.checkpoint.check_fingerprint` compares two fingerprints component by
component
and refuses with an error that names every difference (``field F: checkpoint has callable
1f3a..., this run has callable 9c0b...``).

A bound callable is identified by :func:`callable_digest`, a SHA-256 over what determines its
behaviour, never over its name or its source file's location:

* a Python function or lambda: its code object (byte code, constants, names, recursively for
  nested code), its default arguments, the values in its closure cells, and the module-level
  globals its code reads (plain values, arrays and tensors by content, functions and classes
  recursively; an imported module by its name plus the plain values its code reads from it);
* a bound method: its function and the object it is bound to;
* a :class:`torch.nn.Module` or any other object: the code of its class (methods of every class
  of its MRO outside third-party libraries such as torch and numpy, whose code is identified by
  its qualified name) and its instance attributes, recursively -- for a module this covers its
  parameters and buffers (by content), sub-modules, hooks and the ``training`` flag;
* tensors and arrays by shape, dtype and content; numbers and strings by value; containers
  element by element (sets in a canonical order);
* OpenMM objects by their XML serialization (a ``Context`` by its system, parameter values,
  platform and precision); TorchScript by its serialized code and tensors.

A class lists in ``__fingerprint_ignore__`` the instance attributes that are run-time caches
or counters rather than part of what its instances compute.

An object whose behaviour lives where Python cannot see it -- an instance of a type implemented
in C with no inspectable state (a TorchScript function, an OpenMM ``Context``, a lock), or an
object graph too large to walk -- cannot be identified: :func:`callable_digest` raises
:class:`Unidentifiable` naming the path to it, and the fingerprint records
``unidentified: <reason>``. Resuming such a run requires ``resume="trust"``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import sys
import types
import zipfile
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import sympy
import torch

from splitsde.base.errors import SplitsdeError

__all__ = [
    "UNIDENTIFIED",
    "Unidentifiable",
    "callable_digest",
    "run_fingerprint",
]

#: Prefix of a fingerprint entry whose callable could not be identified.
UNIDENTIFIED = "unidentified: "

#: Objects walked at most while identifying one callable.
MAX_OBJECTS = 200_000

#: Top-level packages whose functions and classes are identified by qualified name only.
_LIBRARIES = frozenset(
    {"splitsde", "torch", "numpy", "scipy", "sympy", "mpmath", "openmm", "simtk", "builtins"}
) | frozenset(sys.stdlib_module_names)

#: Instance attributes of torch modules that change between calls without changing what the
#: module computes (call counters, compiled-graph caches).
_VOLATILE = frozenset({"_compiled_call_impl", "__dict__", "__weakref__"})


class Unidentifiable(SplitsdeError, ValueError):
    """A callable whose behaviour cannot be digested (opaque object, C extension type)."""


def _library(module: str | None) -> bool:
    return (module or "").split(".")[0] in _LIBRARIES


class _Digest:
    """A SHA-256 over a canonical walk of an object graph."""

    def __init__(self, budget: list[int] | None = None) -> None:
        self.h = hashlib.sha256()
        self.seen: dict[int, int] = {}
        self.alive: list[Any] = []  # keep walked objects alive so their ids stay unique
        self.budget = budget if budget is not None else [MAX_OBJECTS]

    def tag(self, *parts: Any) -> None:
        for p in parts:
            self.h.update(str(p).encode())
            self.h.update(b"\x00")

    def hexdigest(self) -> str:
        return self.h.hexdigest()

    def _memo(self, obj: Any) -> bool:
        """True if ``obj`` was walked already (a back reference is recorded instead)."""
        key = id(obj)
        if key in self.seen:
            self.tag("ref", self.seen[key])
            return True
        self.seen[key] = len(self.seen)
        self.alive.append(obj)
        self.budget[0] -= 1
        if self.budget[0] < 0:
            raise Unidentifiable(f"more than {MAX_OBJECTS} objects are reachable from it")
        return False

    def _sub(self, obj: Any, path: str) -> str:
        """The digest of ``obj`` on its own (for canonical ordering of sets)."""
        d = _Digest(self.budget)
        d.feed(obj, path)
        return d.hexdigest()

    # -- the walk ---------------------------------------------------------------------------
    def feed(self, obj: Any, path: str) -> None:
        if obj is None or obj is Ellipsis or obj is NotImplemented:
            self.tag(repr(obj))
        elif isinstance(obj, bool | int | float | complex | str | bytes):
            self.tag(type(obj).__name__, repr(obj))
        elif isinstance(obj, torch.Tensor):
            self._tensor(obj, path)
        elif isinstance(obj, torch.jit.ScriptModule | torch.jit.ScriptFunction):
            self._torchscript(obj, path)
        elif isinstance(obj, np.ndarray):
            self.tag("ndarray", obj.shape, obj.dtype.str)
            if obj.dtype.hasobject:
                for i, v in enumerate(obj.ravel().tolist()):
                    self.feed(v, f"{path}[{i}]")
            else:
                self.h.update(np.ascontiguousarray(obj).tobytes())
        elif isinstance(obj, np.generic):
            self.tag("npscalar", obj.dtype.str, repr(obj.item()))
        elif isinstance(obj, torch.dtype | torch.device | np.dtype | Fraction | Decimal):
            self.tag(type(obj).__name__, str(obj))
        elif isinstance(obj, sympy.Basic):
            self.tag("sympy", sympy.srepr(obj))
        elif isinstance(obj, types.ModuleType):
            self.tag("module", obj.__name__)
        elif isinstance(obj, type):
            self._class(obj, path)
        elif isinstance(obj, types.FunctionType):
            self._function(obj, path)
        elif isinstance(obj, types.MethodType):
            if self._memo(obj):
                return
            self.tag("method")
            self.feed(obj.__func__, f"{path}.__func__")
            self.feed(obj.__self__, f"{path}.__self__")
        elif isinstance(obj, types.BuiltinFunctionType | types.BuiltinMethodType):
            owner = getattr(obj, "__self__", None)
            self.tag("builtin", getattr(obj, "__module__", None), obj.__qualname__)
            if owner is not None and not isinstance(owner, types.ModuleType):
                self.feed(owner, f"{path}.__self__")
        elif isinstance(obj, types.CodeType):
            self._code(obj, path)
        elif isinstance(obj, np.ufunc):
            self.tag("ufunc", obj.__name__)
        elif isinstance(obj, functools.partial):
            if self._memo(obj):
                return
            self.tag("partial")
            self.feed(obj.func, f"{path}.func")
            self.feed(obj.args, f"{path}.args")
            self.feed(obj.keywords, f"{path}.keywords")
        elif isinstance(obj, np.random.Generator | np.random.RandomState):
            state = obj.bit_generator.state if hasattr(obj, "bit_generator") else obj.get_state()
            self.tag("numpy generator")
            self.feed(state, f"{path} state")
        elif isinstance(obj, tuple | list):
            # tuples cannot close a cycle by themselves: only mutable containers are memoized
            if isinstance(obj, list) and self._memo(obj):
                return
            self.tag(type(obj).__name__, len(obj))
            for i, v in enumerate(obj):
                self.feed(v, f"{path}[{i}]")
        elif isinstance(obj, dict):
            if self._memo(obj):
                return
            self.tag("dict", len(obj))
            for k, v in obj.items():
                self.feed(k, f"{path} key")
                self.feed(v, f"{path}[{k!r}]")
        elif isinstance(obj, set | frozenset):
            if isinstance(obj, set) and self._memo(obj):
                return
            self.tag("set", sorted(self._sub(v, f"{path} element") for v in obj))
        elif isinstance(obj, range | slice):
            self.tag(type(obj).__name__, repr(obj))
        elif isinstance(obj, re.Pattern):
            self.tag("pattern", obj.pattern, obj.flags)
        elif isinstance(obj, torch.Generator):
            self.tag("generator", obj.device)
            self._tensor(obj.get_state(), f"{path} state")
        elif isinstance(obj, staticmethod | classmethod):
            self.tag(type(obj).__name__)
            self.feed(obj.__func__, path)
        elif isinstance(obj, functools.cached_property):
            self.tag("cached_property")
            self.feed(obj.func, path)
        elif isinstance(obj, property):
            self.tag("property")
            for part in (obj.fget, obj.fset, obj.fdel):
                self.feed(part, path)
        elif type(obj) is types.SimpleNamespace:
            self._object(obj, path)
        elif (type(obj).__module__ or "").split(".")[0] == "openmm":
            self._openmm(obj, path)
        elif not _opaque(type(obj)) and (hasattr(obj, "__dict__") or _slots(type(obj))):
            self._object(obj, path)
        else:
            raise Unidentifiable(
                f"{path} is a {type(obj).__module__}.{type(obj).__qualname__}, whose state "
                "cannot be inspected"
            )

    def _tensor(self, x: torch.Tensor, path: str) -> None:
        try:
            x = x.detach()
            if x.is_sparse:
                x = x.to_dense()
            x = x.to("cpu").contiguous()
            self.tag("tensor", tuple(x.shape), x.dtype)
            if x.numel():
                self.h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError) as exc:
            raise Unidentifiable(f"{path}: a tensor whose content cannot be read ({exc})") from None

    def _torchscript(self, obj: Any, path: str) -> None:
        """Compiled TorchScript: the code and tensors of its serialized archive."""
        buf = io.BytesIO()
        try:
            torch.jit.save(obj, buf)
        except Exception as exc:  # any failure means: cannot identify
            raise Unidentifiable(
                f"{path}: a TorchScript object that cannot be saved ({exc})"
            ) from None
        self.tag("torchscript")
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
            for name in sorted(z.namelist()):
                # skip the random id of each save and the debug info (source file paths)
                if name.endswith((".debug_pkl", "serialization_id")):
                    continue
                self.tag(name.split("/", 1)[-1])
                self.h.update(z.read(name))

    def _openmm(self, obj: Any, path: str) -> None:
        """OpenMM objects by their XML serialization; a ``Context`` by its system, its
        parameter values, its platform and precision (not its positions: those are inputs)."""
        openmm = sys.modules["openmm"]
        try:
            if isinstance(obj, openmm.Context):
                platform = obj.getPlatform()
                props = {
                    n: platform.getPropertyValue(obj, n)
                    for n in platform.getPropertyNames()
                    if n.endswith("Precision")
                }
                self.tag("openmm context", platform.getName(), sorted(props.items()))
                self.tag(sorted(obj.getParameters().items()))
                self.tag(openmm.XmlSerializer.serialize(obj.getSystem()))
            else:
                self.tag("openmm", type(obj).__qualname__, openmm.XmlSerializer.serialize(obj))
        except Exception as exc:  # not serializable: cannot identify
            raise Unidentifiable(
                f"{path} is an openmm.{type(obj).__qualname__} that cannot be serialized"
            ) from exc

    def _code(self, code: types.CodeType, path: str) -> None:
        self.tag("code", code.co_argcount, code.co_kwonlyargcount, code.co_flags, code.co_names)
        self.h.update(code.co_code)
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                self._code(c, path)
            else:
                self.feed(c, f"{path} constant")

    def _function(self, fn: types.FunctionType, path: str) -> None:
        if self._memo(fn):
            return
        library = _library(fn.__module__)
        if library:  # fixed code: its name, but the state it closes over still counts
            self.tag("libfunction", fn.__module__, fn.__qualname__)
        else:
            self.tag("function")
            self._code(fn.__code__, path)
        self.feed(fn.__defaults__, f"{path} defaults")
        self.feed(fn.__kwdefaults__, f"{path} keyword defaults")
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later)
                self.tag("empty cell", name)
                continue
            self.tag("cell", name)
            self.feed(value, f"{path} closure variable {name!r}")
        if library:
            return
        names = _global_names(fn.__code__)
        g = fn.__globals__
        for name in names:
            if name not in g:
                continue  # a builtin or an attribute name
            value = g[name]
            self.tag("global", name)
            if isinstance(value, types.ModuleType):
                self.tag("module", value.__name__)
                # the plain values the code reads from the module (mymodule.K)
                for attr in names:
                    v = vars(value).get(attr)
                    if _plain(v):
                        self.tag("attribute", attr)
                        self.feed(v, f"{path} global {name}.{attr}")
            else:
                self.feed(value, f"{path} global {name!r}")

    def _class(self, cls: type, path: str) -> None:
        if self._memo(cls):
            return
        if _library(cls.__module__):
            self.tag("libclass", cls.__module__, cls.__qualname__)
            return
        self.tag("class", cls.__qualname__)
        for base in cls.__mro__[1:]:
            self.tag("base", base.__qualname__)
        for klass in cls.__mro__:
            if _library(klass.__module__):
                continue
            for name, value in sorted(vars(klass).items()):
                code_like = isinstance(
                    value, types.FunctionType | staticmethod | classmethod | property
                )
                if (name.startswith("__") and name.endswith("__") and not code_like) or (
                    name.startswith("_abc_")
                ):
                    continue  # interpreter bookkeeping (docs, annotations, ABC caches)
                if isinstance(value, types.MemberDescriptorType | types.GetSetDescriptorType):
                    continue
                self.tag("member", name)
                self.feed(value, f"{path}.{name}")

    def _object(self, obj: Any, path: str) -> None:
        if self._memo(obj):
            return
        self.tag("object")
        self._class(type(obj), f"{path} class")
        state = getattr(obj, "__dict__", None)
        ignore = _VOLATILE.union(
            *(vars(k).get("__fingerprint_ignore__", ()) for k in type(obj).__mro__)
        )
        if isinstance(state, dict):
            for name, value in sorted(state.items(), key=lambda kv: str(kv[0])):
                if name in ignore:
                    continue
                self.tag("attr", name)
                self.feed(value, f"{path}.{name}")
        for name in _slots(type(obj)):
            if hasattr(obj, name):
                self.tag("slot", name)
                self.feed(getattr(obj, name), f"{path}.{name}")


def _opaque(cls: type) -> bool:
    """Types whose instances keep their state in C: static extension types and pybind11
    classes (their ``__dict__``, if any, is not their state)."""
    return not cls.__flags__ & _HEAPTYPE or type(cls).__name__ == "pybind11_type"


_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: the class was created by Python code


def _slots(cls: type) -> list[str]:
    out: list[str] = []
    for klass in cls.__mro__:
        s = vars(klass).get("__slots__", ())
        out.extend([s] if isinstance(s, str) else list(s))
    return [n for n in out if n not in ("__dict__", "__weakref__")]


def _plain(v: Any) -> bool:
    return isinstance(v, bool | int | float | complex | str | torch.Tensor | np.ndarray)


def _global_names(code: types.CodeType) -> list[str]:
    names: list[str] = []
    stack = [code]
    while stack:
        c = stack.pop()
        names.extend(n for n in c.co_names if n not in names)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return names


def callable_digest(fn: Any) -> str:
    """A 16-hex-digit digest of what ``fn`` computes (see the module docstring); raises
    :class:`Unidentifiable` naming the part that cannot be inspected."""
    d = _Digest()
    d.feed(fn, "the callable")
    return d.hexdigest()[:16]


# -- run fingerprints -------------------------------------------------------------------------
def _digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, torch.Tensor):
            a = a.detach().to("cpu").contiguous()
            h.update(str((tuple(a.shape), a.dtype)).encode())
            h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes() if a.numel() else b"")
        elif isinstance(a, np.ndarray):
            h.update(str((a.shape, a.dtype)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(repr(a).encode())
    return h.hexdigest()[:16]


def _field_entry(name: str, definition: Any, fn: Any) -> str:
    parts = []
    if definition is not None:
        parts.append(f"definition {_digest(sympy.srepr(definition))}")
    if fn is not None:
        try:
            parts.append(f"callable {callable_digest(fn)}")
        except Unidentifiable as exc:
            return f"{UNIDENTIFIED}field {name}'s callable cannot be identified: {exc}"
    return ", ".join(parts) or "none"


def run_fingerprint(
    integrator: Any,
    y0: Sequence[torch.Tensor],
    grid: Any,
    *,
    noise: Any,
    observers: Sequence[Any],
    save_every: int | None,
    save: Sequence[str],
    chunk: int | None,
) -> dict[str, str]:
    """What must agree between the run that wrote a checkpoint and the run resuming it.

    ``grid`` is a :class:`~splitsde.runtime.timegrid.TimeGrid`. Keys name the components; a value
    starting with :data:`UNIDENTIFIED` marks a callable that cannot be identified.
    """
    params = {
        p.name: (_digest(v) if isinstance(v, torch.Tensor) else repr(float(v)))
        for p, v in sorted(integrator.params.items(), key=lambda kv: kv[0].name)
    }
    out = {
        "word": str(integrator.word),
        "reduction": str(integrator.reduction),
        "step program": _digest(integrator.program.listing()),
        "parameters": repr(params),
        "fields": ", ".join(bf.field.name for bf in integrator.fields),
    }
    callables = dict(getattr(integrator, "_callables", {}))
    for name, f in sorted(integrator.sde.fields.items()):
        fn = callables.get(name)
        if f.definition is None and fn is None:
            continue
        out[f"field {name}"] = _field_entry(name, f.definition, fn)
    noise_type = type(noise)
    out.update(
        {
            "blocks": repr([(n, tuple(x.shape)) for n, x in zip(integrator.block_names, y0)]),
            "dtype": str(y0[0].dtype),
            "device": y0[0].device.type,
            "initial state": _digest(*y0),
            "grid": grid.description(),
            "noise source": f"{noise_type.__module__}.{noise_type.__qualname__}",
            "observers": repr([(o.name, type(o).__name__) for o in observers]),
            "saving": repr((save_every, tuple(save), chunk)),
        }
    )
    return out

