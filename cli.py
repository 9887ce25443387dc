"""
What the scripts' command lines share: the one-line error for bad input.
"""

import os
import sys


def die(prog, msg):
    """Bad input: `prog: error: msg` on stderr, one line, and exit status 2. Under torchrun (which
    sets RANK) every process reads the same flags and would say the same: process 0 alone says it."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"{prog}: error: {msg}", file=sys.stderr)
    sys.exit(2)
