"""Looking at the program's objects without running the program's code.

The agent's thread must never call into the program: not a `__repr__`, `__eq__`, `__hash__`,
`__sizeof__`, property or `__getattribute__` of one of its classes or metaclasses. Plain
`getattr`, `isinstance` (which asks a failing object for its `__class__`), `repr`, `==` on
keys and `sys.getsizeof` can all do that. Everything here reads through the descriptors
of the builtin types themselves (`type.__dict__['__qualname__']`, `dict.items`, ...), tests
types with `issubclass(type(x), builtin)` (pure C for a builtin class), and shows text only
from exact builtin values. Where a value would need the program's code, NOT_SHOWN says so.
"""

import sys
import types

from .protocol import NOT_SHOWN

_QUALNAME = type.__dict__["__qualname__"].__get__
_MODULE = type.__dict__["__module__"].__get__
_MRO = type.__dict__["__mro__"].__get__
_NAMESPACE = type.__dict__["__dict__"].__get__  # a mappingproxy of the class's own dict
_MODULE_DICT = types.ModuleType.__dict__["__dict__"].__get__
_STR = str.__str__  # an exact copy of a str subclass's characters, its methods unused
_MISSING = object()
# Methods written in C: calling them runs no code of the program.
_C_METHODS = (
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.BuiltinFunctionType,
    types.ClassMethodDescriptorType,
)
_C_ATTRIBUTES = (types.GetSetDescriptorType, types.MemberDescriptorType)
_PLAIN_KEYS = (str, int, float, bytes, bool, type(None))
_CO_OPTIMIZED = 0x0001


def _frame_locals_kind():
    return type(sys._getframe().f_locals)


# dict up to 3.12; FrameLocalsProxy (written in C) for function frames since 3.13.
_FRAME_LOCALS_TYPES = (dict, _frame_locals_kind())


def is_a(obj, kind):
    """isinstance(obj, kind) for builtin `kind`s, without asking obj for its __class__."""
    return issubclass(type(obj), kind)


def text(value, default="?"):
    """`value` as an exact str if it is a str (a subclass's characters copied), else default."""
    if type(value) is str:
        return value
    if issubclass(type(value), str):
        return _STR(value)
    return default


def type_name(kind):
    """'module.Qualname' of a type (builtins without the module), read from the type's
    own slots: a metaclass's __getattribute__ or properties are never asked."""
    try:
        name = text(_QUALNAME(kind), "")
        module = text(_MODULE(kind), "")
    except Exception:  # a type without __module__ (AttributeError), or a broken one
        return "?"
    if not name:
        return "?"
    if not module:
        return "?." + name
    return name if module == "builtins" else module + "." + name


def mro(kind):
    """The classes of a type's MRO, as the type holds them (a metaclass's mro() is not
    called again)."""
    return _MRO(kind)


def class_attribute(klass, name):
    """The entry `name` in a class's own namespace (no descriptor runs), or _MISSING."""
    return _NAMESPACE(klass).get(name, _MISSING)


def _resolve(kind, name):
    """What `name` resolves to on type `kind` (the first class in its MRO that has it)."""
    for klass in _MRO(kind):
        found = class_attribute(klass, name)
        if found is not _MISSING:
            return found
    return _MISSING


def sizeof_is_builtin(kind):
    """True when sys.getsizeof on instances of `kind` runs only C code (its __sizeof__ is
    not one the program defined)."""
    try:
        return type(_resolve(kind, "__sizeof__")) in _C_METHODS
    except Exception:
        return False


def shallow_size(obj):
    """The object's own struct (what `object.__sizeof__` counts): never the program's code."""
    return object.__sizeof__(obj)


def instance_dict(obj):
    """The attribute dict of an instance, through the C descriptor its class inherited, or
    None when the class puts something of its own there (a property named __dict__)."""
    try:
        found = _resolve(type(obj), "__dict__")
        if type(found) not in _C_ATTRIBUTES:
            return None
        namespace = found.__get__(obj, type(obj))
    except Exception:
        return None
    return namespace if is_a(namespace, dict) else None


def class_items(klass):
    """(name, value) pairs of a class's own namespace."""
    return list(_NAMESPACE(klass).items())


def module_dict(module):
    """A module's globals, without asking a module subclass anything."""
    try:
        namespace = _MODULE_DICT(module)
    except Exception:
        return None
    return namespace if is_a(namespace, dict) else None


def dict_items(mapping):
    """(key, value) pairs of a dict or dict subclass, by dict's own iteration."""
    return list(dict.items(mapping))


def sequence_items(sequence):
    """Items of a list or tuple (or a subclass), by the builtin's own iteration."""
    if is_a(sequence, list):
        return list(list.__iter__(sequence))
    return list(tuple.__iter__(sequence))


def frame_locals(frame):
    """(name, value) pairs of a function frame's locals, or None for other frames: a class
    body's namespace may be a mapping of the program's (`__prepare__`)."""
    if not frame.f_code.co_flags & _CO_OPTIMIZED:
        return None
    namespace = frame.f_locals
    if type(namespace) not in _FRAME_LOCALS_TYPES:
        return None
    if type(namespace) is dict:
        return dict_items(namespace)
    return list(namespace.items())


def key_text(key):
    """A dict key for display: repr of exact builtin values only; for anything else the
    type's name and why its value is not shown."""
    kind = type(key)
    if kind in _PLAIN_KEYS:
        if kind is int and key.bit_length() > 192:
            return "<int of %d bits>" % key.bit_length()
        if kind in (str, bytes) and len(key) > 60:
            key = key[:60]  # the repr of a long key is cut anyway
        shown = kind.__repr__(key)
        return shown if len(shown) <= 60 else shown[:57] + "..."
    return "<%s key: %s>" % (type_name(type(key)), NOT_SHOWN)
