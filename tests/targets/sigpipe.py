"""Restores SIGPIPE's default action (as many command-line tools do), then idles.

argv: STATE
"""

import signal
import sys

from _state import serve_forever

signal.signal(signal.SIGPIPE, signal.SIG_DFL)
serve_forever(sys.argv[1])
