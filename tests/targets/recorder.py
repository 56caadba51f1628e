"""A program whose classes record every call of their special methods made from a thread
other than its own two: the agent must inspect its objects without running any of them.

argv: STATE
Each of Holder1..Holder6 has one instance (Holder5: 3000), reachable from a module global
only through an object whose class defines the methods a careless walk would call:
  Holder1  the value of a dict entry whose key is a str subclass (__repr__, __eq__, __hash__)
  Holder2  an attribute of an instance with __getattribute__ and a __class__ property
  Holder3  an item of a list subclass with __iter__ and __len__
  Holder4  a closure variable next to a cell holding an object with __eq__
  Holder5  an instance of a class whose metaclass has __getattribute__, __hash__ and __eq__,
           and that defines __sizeof__ and __repr__
  Holder6  held by a thread of a Thread subclass whose name and ident are properties
and sys.modules holds an object that is not a module, with a __class__ property.
The state file lists the recorded calls ("calls").
"""

import sys
import threading
import time

from _state import report

STATE = sys.argv[1]
MAIN = threading.get_ident()
OWN = {MAIN}
CALLS = []


def record(what):
    if threading.get_ident() not in OWN:
        CALLS.append(what)


class Key(str):
    def __repr__(self):
        record("Key.__repr__")
        return "Key()"

    def __str__(self):
        record("Key.__str__")
        return "Key"

    def __eq__(self, other):
        record("Key.__eq__")
        return str.__eq__(self, other)

    def __hash__(self):
        record("Key.__hash__")
        return str.__hash__(self)


class Sneaky:
    def __getattribute__(self, name):
        record("Sneaky.__getattribute__ " + name)
        return object.__getattribute__(self, name)

    @property
    def __class__(self):
        record("Sneaky.__class__")
        return dict


class Listy(list):
    def __iter__(self):
        record("Listy.__iter__")
        return list.__iter__(self)

    def __len__(self):
        record("Listy.__len__")
        return list.__len__(self)


class Loud:
    def __eq__(self, other):
        record("Loud.__eq__")
        return self is other

    __hash__ = object.__hash__


class Meta(type):
    def __getattribute__(cls, name):
        record("Meta.__getattribute__ " + name)
        return type.__getattribute__(cls, name)

    def __hash__(cls):
        record("Meta.__hash__")
        return type.__hash__(cls)

    def __eq__(cls, other):
        record("Meta.__eq__")
        return cls is other


class Holder1:
    pass


class Holder2:
    pass


class Holder3:
    pass


class Holder4:
    pass


class Holder5(metaclass=Meta):
    def __sizeof__(self):
        record("Holder5.__sizeof__")
        return 1

    def __repr__(self):
        record("Holder5.__repr__")
        return "Holder5()"


class Holder6:
    pass


class Worker(threading.Thread):
    @property
    def name(self):
        record("Worker.name")
        return "worker"

    @name.setter
    def name(self, value):
        pass

    @property
    def ident(self):
        record("Worker.ident")
        return 0

    def run(self):
        keep = Holder6()
        while True:
            time.sleep(0.05)
            assert keep is not None


class NotAModule:
    @property
    def __class__(self):
        record("NotAModule.__class__")
        return type(sys)


def closing_over(a_loud, b_holder):
    # Free variables are kept in name order: comparing the cells from the first one on
    # would compare a_loud's value with b_holder's.
    def inner():
        return a_loud, b_holder

    return inner


REGISTRY = {Key("session"): Holder1()}
SNEAKY = Sneaky()
object.__setattr__(SNEAKY, "child", Holder2())
LISTY = Listy([Holder3()])
CLOSURE = closing_over(Loud(), Holder4())
OBJECTS = [Holder5() for _ in range(3000)]  # among the largest types: on screen
sys.modules["hostile_lazy"] = NotAModule()

worker = Worker(daemon=True)
worker.start()
OWN.add(worker._ident)
counter = 0
while True:
    counter += 1
    report(STATE, counter=counter, calls=list(CALLS))
    time.sleep(0.05)
