"""Who keeps an object alive: a referrer chain from the object back to a root.

A breadth-first walk up `gc.get_referrers`, bounded in time, depth and breadth, stopping at
a root: a module (a global), a class (a class attribute), a frame of another thread (a
local variable). The agent's own frames and the walk's own containers are not referrers.
The answer is text only (type names, attribute names, dict keys of plain types); target
objects are never repr()'d, compared or asked for attributes through their own classes
(safeview.py: none of the program's code runs in the agent's thread), and no reference to
them survives the call.
"""

import _thread
import gc
import sys
import types

from . import safeview
from .objects import Deadline, type_name
from .safeview import is_a, text

MAX_DEPTH = 12
MAX_NODES = 400
MAX_REFERRERS = 64


def chain(obj, seconds=2.0):
    """Steps from a root down to `obj`, as dicts {"type", "edge", "root"}; plus whether the
    walk was cut short. The object itself is the last step."""
    deadline = Deadline(seconds)
    ignore = _own_objects()
    roots = _module_dicts()
    frames, stacks = _other_thread_frames()
    # Since 3.11 gc.get_referrers() does not return frames that are running, so a value
    # held only by another thread's local variable is found through this index instead.
    held_in = _locals_of(stacks)
    parents = {id(obj): None}
    keep = [obj]  # the walk's objects, alive until the walk ends (ids stay unique)
    queue = [obj]
    found = None
    cut = False
    try:
        ignore.update(
            (id(parents), id(keep), id(queue), id(roots), id(frames), id(held_in), id(stacks))
        )
        while queue and found is None:
            if deadline.passed() or len(parents) > MAX_NODES:
                cut = True
                break
            current = queue.pop(0)
            frame = held_in.get(id(current))
            if frame is not None:
                parents[id(frame)] = current
                keep.append(frame)
                found = frame
                break
            depth = _depth(parents, current)
            if depth >= MAX_DEPTH:
                continue
            referrers = gc.get_referrers(current)
            ignore.add(id(referrers))
            try:
                for parent in referrers[:MAX_REFERRERS]:
                    pid = id(parent)
                    # Frames of suspended generators and coroutines are not roots, but the
                    # walk goes on through them (to the task or generator holding them).
                    if pid in ignore or pid in parents:
                        continue
                    parents[pid] = current
                    keep.append(parent)
                    if _is_root(parent, roots, frames):
                        found = parent
                        break
                    queue.append(parent)
            finally:
                ignore.discard(id(referrers))
                del referrers[:]
        if found is None:
            return None, cut
        return _describe(found, parents, roots, frames), cut
    finally:
        # Drop every reference the walk took: memtop must not keep alive what it looks at.
        parents.clear()
        del keep[:], queue[:]
        frames.clear()
        held_in.clear()
        del stacks[:]
        roots.clear()


def _depth(parents, node):
    depth = 0
    child = parents.get(id(node))
    while child is not None:
        depth += 1
        child = parents.get(id(child))
    return depth


def _own_objects():
    """ids of this thread's frames (and their locals): the walk must not count itself."""
    ignore = set()
    frame = sys._getframe()
    while frame is not None:
        ignore.add(id(frame))
        frame = frame.f_back
    return ignore


def _module_dicts():
    """{id(module.__dict__): module name} for every loaded module."""
    found = {}
    modules = sys.modules
    if not is_a(modules, dict):
        return found
    for name, module in safeview.dict_items(modules):
        if type(name) is not str or not is_a(module, types.ModuleType):
            continue
        if name == "_memtop_agent" or name.startswith("_memtop_agent."):
            continue
        namespace = safeview.module_dict(module)
        if namespace is not None:
            found[id(namespace)] = name
    return found


def _locals_of(stacks):
    """{id(value): frame} for the local variables of the given frames."""
    index = {}
    for frame in stacks:
        # Function frames only: a module's locals are its globals (found as "module X"
        # roots), and a class body's may be a mapping of the program's.
        for _, value in safeview.frame_locals(frame) or ():
            index.setdefault(id(value), frame)
    return index


def _other_thread_frames():
    """({id(frame): thread name}, [frame, ...]) for the frames on other threads' stacks."""
    names = _thread_names()
    me = _thread.get_ident()
    frames = {}
    stacks = []
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        while frame is not None:
            frames[id(frame)] = names.get(ident, str(ident))
            stacks.append(frame)
            frame = frame.f_back
    return frames, stacks


def _thread_names():
    """{ident: name} of the program's threads, read from threading's own table and each
    Thread's attribute dict: a Thread subclass's properties are never asked."""
    names = {}
    # threading only if the program imported it: importing it from the agent's thread
    # would make that thread the program's "main thread".
    modules = sys.modules
    threading = dict.get(modules, "threading") if is_a(modules, dict) else None
    namespace = safeview.module_dict(threading) if is_a(threading, types.ModuleType) else None
    active = dict.get(namespace, "_active") if namespace is not None else None
    if not is_a(active, dict):
        return names
    for ident, thread in safeview.dict_items(active):
        attributes = safeview.instance_dict(thread)
        name = dict.get(attributes, "_name") if attributes is not None else None
        if type(ident) is int and type(name) is str:
            names[ident] = name
    return names


def _is_root(obj, roots, frames):
    return id(obj) in roots or is_a(obj, type) or id(obj) in frames


def _describe(root, parents, roots, frames):
    """Steps from the root down to the object, namespaces folded into their owner's step
    (instance -> __dict__ -> value reads as instance .name -> value)."""
    path = []
    node = root
    while node is not None:
        path.append(node)
        node = parents.get(id(node))
    steps = []
    index = 0
    while index < len(path):
        node = path[index]
        child = path[index + 1] if index + 1 < len(path) else None
        edge = _edge(node, child, roots) if child is not None else ""
        after = path[index + 2] if index + 2 < len(path) else None
        value = path[index + 3] if index + 3 < len(path) else None
        if child is not None and after is not None and _is_namespace(node, child):
            edge = _namespace_edge(node, child, after)
            index += 1  # the namespace dict itself is not a step of its own
        elif (
            type(node) is types.FunctionType
            and child is node.__closure__
            and type(after) is types.CellType
            and value is not None
        ):
            edge = "closure variable %s" % _free_variable(node, child, after)
            index += 2  # nor are the closure tuple and the cell
        step = {
            "type": type_name(type(node)),
            "edge": edge,
            "root": _root_label(node, roots, frames) if node is root else "",
        }
        if node is root and id(node) in frames:
            # The viewer shortens the path as it does everywhere else.
            code = node.f_code
            step["frame"] = [
                text(code.co_filename),
                node.f_lineno,
                text(code.co_name),
                frames[id(node)],
            ]
        steps.append(step)
        index += 1
    return steps


def _free_variable(function, closure, cell):
    """The name of the closure variable held in `cell` (cells compared by identity: a
    cell's == compares the values it holds, with their own __eq__)."""
    for position, item in enumerate(tuple.__iter__(closure)):
        if item is cell:
            names = function.__code__.co_freevars
            return text(names[position]) if position < len(names) else "?"
    return "?"


def _is_namespace(owner, child):
    """True when `child` is the attribute dict of `owner` (an instance or a class)."""
    if not is_a(child, dict):
        return False
    if is_a(owner, type):
        return any(item is child for item in gc.get_referents(owner))
    return safeview.instance_dict(owner) is child


def _namespace_edge(owner, namespace, value):
    for name, item in safeview.dict_items(namespace):
        if item is value and type(name) is str:
            return ("attribute %s" % name) if is_a(owner, type) else ("." + name)
    return "(an attribute)"


def _root_label(node, roots, frames):
    if id(node) in roots:
        return "module %s" % roots[id(node)]
    if is_a(node, type):
        return "class %s" % type_name(node)
    frame = node
    return "thread %s: %s() at %s:%d" % (
        frames.get(id(frame), "?"),
        text(frame.f_code.co_name),
        text(frame.f_code.co_filename),
        frame.f_lineno,
    )


def _edge(parent, child, roots):
    """How `parent` refers to `child`, in words fit for display."""
    if is_a(parent, dict):
        for key, value in safeview.dict_items(parent):
            if value is child:
                if id(parent) in roots and type(key) is str:
                    return "global %s" % key
                return "[%s]" % safeview.key_text(key)
            if key is child:
                return "(a key)"
        return "(a dict entry)"
    if is_a(parent, (list, tuple)):
        for index, value in enumerate(safeview.sequence_items(parent)):
            if value is child:
                return "[%d]" % index
    if is_a(parent, (set, frozenset)):
        return "(a member)"
    if type(parent) is types.FrameType:
        for name, value in safeview.frame_locals(parent) or ():
            if value is child:
                return "local %s" % text(name)
        return "(a frame reference)"
    if type(parent) is types.CellType:
        return "(closure cell)"
    if type(parent) is types.FunctionType:
        owner = text(parent.__qualname__)
        if parent.__closure__ is child:
            return "closure of %s" % owner
        if parent.__globals__ is child:
            return "(globals of %s)" % owner
        return "(referenced by %s)" % owner
    if is_a(parent, type):
        for name, value in safeview.class_items(parent):
            if value is child:
                return "attribute %s" % text(name)
        return "(class internals)"
    namespace = safeview.instance_dict(parent)
    if namespace is child:
        return ".__dict__"
    if namespace is not None:
        # (Since 3.11 an instance may hold its attributes without a dict object; asking
        # for __dict__ creates one: a small, one-off cost for one object on the chain.)
        for name, value in safeview.dict_items(namespace):
            if value is child and type(name) is str:
                return "." + name
    slot = _slot_holding(parent, child)
    return "." + slot if slot else "(referenced)"


def _slot_holding(owner, child):
    """The name of the `__slots__` member of `owner` that holds `child`, or None. Read
    through the classes' own dicts and the slots' C descriptors: no code of the program
    (a metaclass, a property, __getattr__) runs."""
    for klass in safeview.mro(type(owner)):
        for name, member in safeview.class_items(klass):
            if type(member) is not types.MemberDescriptorType or type(name) is not str:
                continue
            try:
                value = member.__get__(owner, klass)
            except (AttributeError, TypeError):  # an empty slot, or not this object's
                continue
            if value is child:
                return name
    return None
