"""Does nothing but report its state: the agent's host for protocol and lifecycle tests."""

import sys

from _state import serve_forever

serve_forever(sys.argv[1])
