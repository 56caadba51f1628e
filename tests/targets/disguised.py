"""Objects whose classes run Python code when looked at: a `__class__` property, a
`__getattr__` on a slotted class, a dict subclass with its own items(), a list subclass with
its own __iter__, a str key with its own __repr__, a metaclass computing the class's name,
a `__sizeof__` of the program's own, and a lazily loaded module. One Kept sits at the end
of a chain through them; any of that code running leaves a mark in STATE.ran (the tests
look for it).

argv: STATE
"""

import importlib.abc
import importlib.util
import sys
import time

from _state import report

STATE = sys.argv[1]


def mark(what):
    with open(STATE + ".ran", "a") as out:
        out.write(what + "\n")


class Named(type):
    def __getattribute__(cls, name):
        if name in ("__module__", "__qualname__", "__name__", "__dict__"):
            mark("metaclass " + name)
        return type.__getattribute__(cls, name)


class Kept(metaclass=Named):
    pass


class Sized:
    def __sizeof__(self):
        mark("__sizeof__")
        raise RuntimeError("deep sizes are the program's business")


SIZED = [Sized() for _ in range(3)]


class Slotted:
    __slots__ = ("held",)

    def __init__(self, held):
        self.held = held

    def __getattr__(self, name):
        mark("__getattr__ " + name)
        raise AttributeError(name)

    @property
    def __class__(self):
        mark("__class__")
        return Slotted


class Items(dict):
    def items(self):
        mark("items")
        return dict.items(self)


class Listed(list):
    def __iter__(self):
        mark("__iter__")
        return list.__iter__(self)

    def __len__(self):
        mark("__len__")
        return list.__len__(self)


class Key(str):
    def __repr__(self):
        mark("__repr__")
        return str.__repr__(self)


HOLD = Items({Key("k"): Listed([Slotted(Kept())])})


def lazy_module():
    """A module loaded on first attribute access (importlib's LazyLoader)."""
    source = "import sys\nopen(sys.argv[1] + '.ran', 'a').write('lazy module loaded\\n')\n"
    loader = importlib.util.LazyLoader(_SourceLoader(source))
    spec = importlib.util.spec_from_loader("lazily", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["lazily"] = module
    loader.exec_module(module)
    return module


class _SourceLoader(importlib.abc.Loader):
    def __init__(self, source):
        self.source = source

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(self.source, module.__dict__)


if __name__ == "__main__":
    lazy_module()
    while True:
        report(STATE)
        time.sleep(0.2)
