"""The code that gets the agent into a process, one template for both ways in.

Both load the agent package by path under a private module name, once per process, with
the same lines (`_LOAD_AGENT`). What surrounds them differs, because the two run in
different places:

* an attach runs it inside a program already running (sys.remote_exec, or exec() of a
  gdb pending call), in a fresh namespace and under 1 KB: it frees the gdb page it was
  written into, does nothing when the viewer withdrew its session, reuses an agent the
  program imported itself (opt-in), and never lets an exception out into the program;
* `memtop run` runs it as the new interpreter's `python -c` code, which then becomes the
  program (agent.launch): an error there must show and end the process like any failed
  start, and its last line is how `memtop ps` recognises such a program
  (formatting.display_command).
"""

from __future__ import annotations

import textwrap

from memtop.formatting import RUN_BOOTSTRAP_END

PRIVATE_NAME = "_memtop_agent"

# Leaves the agent package in `m`, loaded from the directory in `a` unless it is loaded
# already (`{reuse}` may name one more module to look for). A failed load leaves no
# half-made module behind, so a later attach loads it afresh.
_LOAD_AGENT = f"""m=sys.modules.get('{PRIVATE_NAME}'){{reuse}}
if m is None:
 import importlib.util as u
 q=u.spec_from_file_location('{PRIVATE_NAME}',a+'/__init__.py',submodule_search_locations=[a])
 m=u.module_from_spec(q);sys.modules[q.name]=m
 try:q.loader.exec_module(m)
 except BaseException:
  del sys.modules[q.name];raise
"""

_ATTACH_HEAD = """import sys,os
def _memtop(s,a,p):
 try:
  if p:
   import ctypes
   ctypes.pythonapi.munmap(ctypes.c_void_p(p),4096)
  if not os.path.exists(s):return
"""
_ATTACH_LOAD = textwrap.indent(
    _LOAD_AGENT.format(reuse=" or sys.modules.get('memtop.agent')"), "  "
)
_RUN_LOAD = _LOAD_AGENT.format(reuse="")


def attach_code(session_path: str, agent_dir: str, page: str) -> str:
    """The bootstrap an attach runs in the target: boot the agent with the session file
    `session_path`; `page` is the address of the gdb page that holds it ("0": none)."""
    return (
        f"{_ATTACH_HEAD}{_ATTACH_LOAD}  m.boot(s)\n except BaseException:pass\n"
        f"_memtop({session_path!r},{agent_dir!r},{page})\n"
    )


def run_code(agent_dir: str) -> str:
    """The `python -c` code of `memtop run`: start the agent, then run the program named by
    the arguments that follow (agent.launch)."""
    return (
        f"import sys\na={agent_dir!r}\n{_RUN_LOAD}"
        f"import {PRIVATE_NAME}.launch as l\n{RUN_BOOTSTRAP_END}"
    )
