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
        id(module.__dict__): name
        for name, module in list(sys.modules.items())
        if isinstance(module, types.ModuleType)
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
    names = {t.ident: t.name for t in threading.enumerate()} if threading else {}
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


def _is_root(obj, roots, frames):
    return id(obj) in roots or isinstance(obj, type) or id(obj) in frames


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
            isinstance(node, types.FunctionType)
            and child is node.__closure__
            and isinstance(after, types.CellType)
            and value is not None
        ):
            edge = "closure variable %s" % node.__code__.co_freevars[child.index(after)]
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
    if not isinstance(child, dict):
        return False
    if isinstance(owner, type):
        return child in gc.get_referents(owner)
    return getattr(owner, "__dict__", None) is child


def _namespace_edge(owner, namespace, value):
    for name, item in list(namespace.items()):
        if item is value and isinstance(name, str):
            return ("attribute %s" % name) if isinstance(owner, type) else ("." + name)
    return "(an attribute)"


def _root_label(node, roots, frames):
    if id(node) in roots:
        return "module %s" % roots[id(node)]
    if isinstance(node, type):
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
    if isinstance(parent, dict):
        for key, value in list(parent.items()):
            if value is child:
                if id(parent) in roots and isinstance(key, str):
                    return "global %s" % key
                return "[%s]" % _key_text(key)
            if key is child:
                return "(a key)"
        return "(a dict entry)"
    if isinstance(parent, (list, tuple)):
        for index, value in enumerate(parent):
            if value is child:
                return "[%d]" % index
    if isinstance(parent, (set, frozenset)):
        return "(a member)"
    if isinstance(parent, types.FrameType):
        for name, value in list(parent.f_locals.items()):
            if value is child:
                return "local %s" % name
        return "(a frame reference)"
    if isinstance(parent, types.CellType):
        return "(closure cell)"
    if isinstance(parent, types.FunctionType):
        if parent.__closure__ is child:
            return "closure of %s" % parent.__qualname__
        if parent.__globals__ is child:
            return "(globals of %s)" % parent.__qualname__
        return "(referenced by %s)" % parent.__qualname__
    if isinstance(parent, type):
        for name, value in list(vars(parent).items()):
            if value is child:
                return "attribute %s" % name
        return "(class internals)"
    namespace = getattr(parent, "__dict__", None)
    if namespace is child:
        return ".__dict__"
    if isinstance(namespace, dict):
        # (Since 3.11 an instance may hold its attributes without a dict object; asking
        # for __dict__ creates one: a small, one-off cost for one object on the chain.)
        for name, value in list(namespace.items()):
            if value is child and isinstance(name, str):
                return "." + name
    slot = _slot_holding(parent, child)
    return "." + slot if slot else "(referenced)"


def _slot_holding(owner, child):
    """The name of the `__slots__` member of `owner` that holds `child`, or None. Read
    through the classes' own dicts and the slots' C descriptors: no code of the program
    (a metaclass, a property, __getattr__) runs."""
    for klass in _TYPE_MRO.__get__(type(owner)):
        for name, member in list(_TYPE_DICT.__get__(klass).items()):
            if type(member) is not types.MemberDescriptorType or not isinstance(name, str):
                continue
            try:
                value = member.__get__(owner, klass)
            except (AttributeError, TypeError):  # an empty slot, or not this object's
                continue
            if value is child:
                return name
    return None


_TYPE_MRO = type.__dict__["__mro__"]
_TYPE_DICT = type.__dict__["__dict__"]


def _key_text(key):
    if isinstance(key, _SAFE_KEYS):
        text = repr(key)
        return text if len(text) <= 60 else text[:57] + "..."
    return "<%s>" % type_name(type(key))
