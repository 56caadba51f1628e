"""Reading the program's objects without running any of its Python code.

isinstance() asks an object its `__class__`, getattr() runs properties, `__getattr__` and
a metaclass's `__getattribute__`, iterating a list or dict subclass runs its `__iter__` or
`items()`, repr() runs `__repr__`, and `module.__dict__` on a lazily loaded module loads
it. These read through the built-in types' own C getters instead.
"""

import gc
import sys
import types

_TYPE_DICT = type.__dict__["__dict__"]
_TYPE_MRO = type.__dict__["__mro__"]
_TYPE_MODULE = type.__dict__["__module__"]
_TYPE_QUALNAME = type.__dict__["__qualname__"]
_MODULE_DICT = types.ModuleType.__dict__["__dict__"]


def is_a(obj, kinds):
    """isinstance() by the object's real type (`kinds`: built-in types only)."""
    return issubclass(type(obj), kinds)


def class_dict(kind):
    """The class's own namespace (a read-only view)."""
    return _TYPE_DICT.__get__(kind)


def mro(kind):
    return _TYPE_MRO.__get__(kind)


def type_name(kind):
    """'module.Qualname' of a type (builtins without the module)."""
    try:
        module = _TYPE_MODULE.__get__(kind)
        name = _TYPE_QUALNAME.__get__(kind)
    except (AttributeError, TypeError):
        return "?"
    if type(module) is not str or type(name) is not str:
        return "?"
    return name if module == "builtins" else module + "." + name


def instance_dict(obj):
    """The object's attribute dict, or None (it has none, or its class redefines
    `__dict__`). Since 3.11 an instance may hold its attributes without a dict object;
    this creates one: a small, one-off cost for one object."""
    for klass in mro(type(obj)):
        found = class_dict(klass).get("__dict__")
        if found is None:
            continue
        if type(found) is not types.GetSetDescriptorType:
            return None
        try:
            namespace = found.__get__(obj)
        except (AttributeError, TypeError):
            return None
        return namespace if type(namespace) is dict else None
    return None


def module_dict(module):
    """A module's namespace (a lazily loaded module stays unloaded)."""
    namespace = _MODULE_DICT.__get__(module)
    return namespace if type(namespace) is dict else None


def dict_items(mapping):
    """(key, value) pairs of a dict or dict subclass, its own items() not called."""
    return list(dict.items(mapping))


def sequence_items(sequence):
    """The items of a list or tuple (or subclass), its own __iter__ not called."""
    if issubclass(type(sequence), list):
        return list.copy(sequence)
    return tuple.__getitem__(sequence, slice(None))


_GC_HEAD = sys.getsizeof([]) - [].__sizeof__()  # what getsizeof adds for a tracked object


def sizer(kind):
    """sys.getsizeof for objects of `kind`, or, where the program's code defines
    `__sizeof__` (pandas computes a deep size there), the built-in one beneath it."""
    first = True
    for klass in mro(kind):
        found = class_dict(klass).get("__sizeof__")
        if found is None:
            continue
        if type(found) is types.MethodDescriptorType:
            if first:
                return sys.getsizeof
            return lambda obj: found(obj) + (_GC_HEAD if gc.is_tracked(obj) else 0)
        first = False
    return sys.getsizeof
