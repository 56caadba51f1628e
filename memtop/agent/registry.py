"""The agent's command set: every command is a method registered here with the arguments
it reads and the fields of its reply; its docstring is its entry in docs/protocol.md.

A command sees only the arguments it declares, so a declaration cannot fall behind what
its method reads."""

# The arguments of a table's grouping, read by checks.grouping_config.
GROUPING = ("group_by", "cumulative", "include", "exclude")
# What the totals of a refresh hold (sampler.totals).
TOTALS = (
    "tracing",
    "traced_current",
    "traced_peak",
    "tracemalloc_memory",
    "nframe",
    "allocated_blocks",
    "traced_blocks",
    "memtop_traced",
    "memtop_residue",
    "mode",
    "sample_rate",
    "sampler_gaps",
)


class Command:
    """One registered command: its wire name, method, arguments and reply fields."""

    __slots__ = ("args", "doc", "method", "name", "reply")

    def __init__(self, name, method, args, reply, doc):
        self.name = name
        self.method = method
        self.args = frozenset(args)
        self.reply = tuple(reply)
        self.doc = doc


# name -> Command, in the order the commands are defined.
COMMANDS = {}


def command(name, args=(), reply=()):
    """Register the decorated method as the command `name`."""

    def register(method):
        if name in COMMANDS:
            raise ValueError("command %r is registered twice" % name)
        COMMANDS[name] = Command(name, method.__name__, args, reply, method.__doc__)
        return method

    return register


def declared(spec, args):
    """The arguments of a request that its command declares (others are not read)."""
    return {name: value for name, value in args.items() if name in spec.args}
