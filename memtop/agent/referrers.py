"""Who keeps an object alive: a referrer chain from the object back to a root.

A breadth-first walk up `gc.get_referrers`, bounded in time, depth and breadth, stopping at
a root: a module (a global), a class (a class attribute), a frame of another thread (a
local variable). The agent's own frames and the walk's own containers are not referrers.
The answer is text only (type names, attribute names, dict keys of plain types); target
objects are never repr()'d (that could run their code) and no reference to them survives
the call.
"""

import _thread
import gc
import sys
import types

from .inert import class_dict, dict_items, instance_dict, is_a, module_dict, mro, sequence_items
from .objects import Deadline, type_name

MAX_DEPTH = 12
MAX_NODES = 400
MAX_REFERRERS = 64
_SAFE_KEYS = (str, int, float, bytes, bool, type(None))


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
    return {
        id(module_dict(module)): name
        for name, module in list(sys.modules.items())
        if is_a(module, types.ModuleType)
        and name != "_memtop_agent"
        and not name.startswith("_memtop_agent.")
    }


def _locals_of(stacks):
    """{id(value): frame} for the local variables of the given frames."""
    index = {}
    for frame in stacks:
        if frame.f_code.co_name == "<module>":
            continue  # its locals are the module's globals: found as "module X" roots
        for value in list(frame.f_locals.values()):
            index.setdefault(id(value), frame)
    return index


def _other_thread_frames():
    """({id(frame): thread name}, [frame, ...]) for the frames on other threads' stacks."""
    # threading only if the program imported it: importing it from the agent's thread
    # would make that thread the program's "main thread".
    threading = sys.modules.get("threading")
    names = _thread_names(threading) if threading else {}
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


def _thread_names(threading):
    """{ident: name} of the threads threading knows, read from its table and each thread's
    own dict: `name` and `ident` are properties a Thread subclass may compute in Python,
    and no code of the program may run here."""
    active = getattr(threading, "_active", None)
    thread_class = getattr(threading, "Thread", None)
    if type(active) is not dict or not is_a(thread_class, type):
        return {}
    names = {}
    for ident, thread in list(active.items()):
        namespace = instance_dict(thread)
        name = namespace.get("_name") if namespace is not None else None
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
            is_a(node, types.FunctionType)
            and child is node.__closure__
            and is_a(after, types.CellType)
            and value is not None
        ):
            # By identity: cells compare by their contents (the program's __eq__).
            at = next(i for i, cell in enumerate(child) if cell is after)
            edge = "closure variable %s" % node.__code__.co_freevars[at]
            index += 2  # nor are the closure tuple and the cell
        step = {
            "type": type_name(type(node)),
            "edge": edge,
            "root": _root_label(node, roots, frames) if node is root else "",
        }
        if node is root and id(node) in frames:
            # The viewer shortens the path as it does everywhere else.
            code = node.f_code
            step["frame"] = [code.co_filename, node.f_lineno, code.co_name, frames[id(node)]]
        steps.append(step)
        index += 1
    return steps


def _is_namespace(owner, child):
    """True when `child` is the attribute dict of `owner` (an instance or a class)."""
    if not is_a(child, dict):
        return False
    if is_a(owner, type):
        return any(item is child for item in gc.get_referents(owner))
    return instance_dict(owner) is child


def _namespace_edge(owner, namespace, value):
    for name, item in dict_items(namespace):
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
        frame.f_code.co_name,
        frame.f_code.co_filename,
        frame.f_lineno,
    )


def _edge(parent, child, roots):
    """How `parent` refers to `child`, in words fit for display."""
    if is_a(parent, dict):
        for key, value in dict_items(parent):
            if value is child:
                if id(parent) in roots and type(key) is str:
                    return "global %s" % key
                return "[%s]" % _key_text(key)
            if key is child:
                return "(a key)"
        return "(a dict entry)"
    if is_a(parent, (list, tuple)):
        for index, value in enumerate(sequence_items(parent)):
            if value is child:
                return "[%d]" % index
    if is_a(parent, (set, frozenset)):
        return "(a member)"
    if is_a(parent, types.FrameType):
        for name, value in list(parent.f_locals.items()):
            if value is child:
                return "local %s" % name
        return "(a frame reference)"
    if is_a(parent, types.CellType):
        return "(closure cell)"
    if is_a(parent, types.FunctionType):
        if parent.__closure__ is child:
            return "closure of %s" % parent.__qualname__
        if parent.__globals__ is child:
            return "(globals of %s)" % parent.__qualname__
        return "(referenced by %s)" % parent.__qualname__
    if is_a(parent, type):
        for name, value in list(class_dict(parent).items()):
            if value is child and type(name) is str:
                return "attribute %s" % name
        return "(class internals)"
    namespace = instance_dict(parent)
    if namespace is child:
        return ".__dict__"
    if namespace is not None:
        for name, value in dict_items(namespace):
            if value is child and type(name) is str:
                return "." + name
    slot = _slot_holding(parent, child)
    return "." + slot if slot else "(referenced)"


def _slot_holding(owner, child):
    """The name of the `__slots__` member of `owner` that holds `child`, or None. Read
    through the classes' own dicts and the slots' C descriptors: no code of the program
    (a metaclass, a property, __getattr__) runs."""
    for klass in mro(type(owner)):
        for name, member in list(class_dict(klass).items()):
            if type(member) is not types.MemberDescriptorType or type(name) is not str:
                continue
            try:
                value = member.__get__(owner, klass)
            except (AttributeError, TypeError):  # an empty slot, or not this object's
                continue
            if value is child:
                return name
    return None


def _key_text(key):
    if type(key) in _SAFE_KEYS:  # exactly: a subclass's __repr__ is the program's code
        text = repr(key)
        return text if len(text) <= 60 else text[:57] + "..."
    return "<%s>" % type_name(type(key))
