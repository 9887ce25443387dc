"""
What the scripts' command lines share: the one-line error for bad input.
"""

import sys


def die(prog, msg):
    """Bad input: `prog: error: msg` on stderr, one line, and exit status 2."""
    print(f"{prog}: error: {msg}", file=sys.stderr)
    sys.exit(2)
