"""Wire format shared by the agent and the viewer: u32 big-endian length + UTF-8 JSON object.

Stdlib only, Python 3.9 syntax: this module is loaded inside target processes.
"""

import json
import math
import struct

PROTO_MAJOR = 1
PROTO_MINOR = 0

HEADER = struct.Struct(">I")
MAX_REQUEST = 64 * 1024
MAX_RESPONSE = 16 * 1024 * 1024
FRAME_TIMEOUT = 5.0
MAX_CLIENTS = 4  # authenticated viewers
# Per list of filename patterns (include, exclude): matching a filename costs time linear
# in these.
MAX_PATTERNS = 16
MAX_PATTERN_CHARS = 256
# Said in place of a value whose text only the program's own code could give.
NOT_SHOWN = "value not shown: defined by the program"
# Connections that have not yet authenticated have their own small pool, so that
# token-less connections can never take a viewer's place; the oldest makes room.
MAX_UNAUTHENTICATED = 8

ERROR_CODES = (
    "bad_frame",
    "frame_too_large",
    "bad_json",
    "bad_request",
    "unknown_command",
    "bad_args",
    "unauthorized",
    "busy",
    "rate_limited",
    "proto_mismatch",
    "internal",
)


class ProtocolError(Exception):
    """A frame or message that breaks the protocol; `code` is one of ERROR_CODES."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
        self.message = message


def encode(obj, limit=MAX_RESPONSE):
    """Serialise one message into a frame; ASCII JSON so undecodable filenames survive."""
    body = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode(
        "ascii"
    )
    if len(body) > limit:
        raise ProtocolError(
            "frame_too_large", "message of %d bytes exceeds %d" % (len(body), limit)
        )
    return HEADER.pack(len(body)) + body


# Numbers on the wire are finite and within what a double holds exactly: NaN and Infinity
# (which Python's json accepts by default) would poison every later reply that echoes
# them (allow_nan=False refuses to encode them), and a 60,000-digit integer costs seconds
# of conversion on interpreters without int_max_str_digits.
MAX_NUMBER = 2**53
_MAX_DIGITS = 24


def _no_constant(name):
    raise ProtocolError("bad_json", "%s is not a number JSON allows" % name)


def _bounded_int(text):
    if len(text) > _MAX_DIGITS:
        raise ProtocolError("bad_json", "integer of %d digits is out of range" % len(text))
    value = int(text)
    if not -MAX_NUMBER <= value <= MAX_NUMBER:
        raise ProtocolError("bad_json", "integer %s is out of range" % text)
    return value


def _bounded_float(text):
    value = float(text)
    if not math.isfinite(value) or not -MAX_NUMBER <= value <= MAX_NUMBER:
        raise ProtocolError("bad_json", "number %s is out of range" % text[:_MAX_DIGITS])
    return value


# The one decoder for every frame, in both directions.
_DECODER = json.JSONDecoder(
    parse_constant=_no_constant, parse_int=_bounded_int, parse_float=_bounded_float
)


def decode(body):
    """Parse a frame body into a dict, mapping every failure to a protocol error code."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("bad_json", "frame is not valid UTF-8") from None
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError):
        # RecursionError: deeply nested arrays must be an error reply, not a dropped connection.
        raise ProtocolError("bad_json", "frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_request", "message must be a JSON object")
    return obj


class FrameReader:
    """Incremental frame parser: feed bytes, collect complete message bodies."""

    def __init__(self, limit):
        self.limit = limit
        self.buffer = bytearray()

    def in_frame(self):
        """True while a frame has started but not completed."""
        return len(self.buffer) > 0

    def feed(self, data):
        """Add received bytes; return the list of complete frame bodies now available."""
        self.buffer += data
        bodies = []
        while len(self.buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self.buffer)
            if length > self.limit:
                # Refuse before buffering anything of the body: no allocation for 4 GiB claims.
                raise ProtocolError(
                    "frame_too_large", "frame of %d bytes exceeds %d" % (length, self.limit)
                )
            end = HEADER.size + length
            if len(self.buffer) < end:
                break
            bodies.append(bytes(self.buffer[HEADER.size : end]))
            del self.buffer[:end]
        return bodies


def error_reply(request_id, code, message, retry_in=None):
    """The reply object for a failed request; a `busy` one says when to ask again."""
    error = {"code": code, "message": message}
    if retry_in is not None:
        error["retry_in"] = round(retry_in, 3)
    return {"id": request_id, "ok": False, "error": error}
