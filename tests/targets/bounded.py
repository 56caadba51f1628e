"""Holds objects allocated at many distinct files and lines, and reports the program's own
regex caches (which a viewer's filters must not fill) and how fast its loop turns.

argv: STATE [FILES]
"""

import fnmatch
import re
import sys
import time

from _state import report

FILES = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
HELD = []
for index in range(FILES):
    # One distinct filename per allocation site: FILES keys in every grouping.
    code = compile("HELD.append([index, str(index)])", "/srv/app/mod%04d.py" % index, "exec")
    exec(code, {"HELD": HELD, "index": index})


def regex_cache_entries():
    """Entries in re's caches (`_cache`, and `_cache2` since 3.13) and fnmatch's."""
    entries = sum(len(value) for name, value in vars(re).items() if name.startswith("_cache"))
    return entries + fnmatch._compile_pattern.cache_info().currsize


counter = 0
while True:
    counter += 1
    report(sys.argv[1], counter=counter, regex_cache=regex_cache_entries())
    time.sleep(0.05)
