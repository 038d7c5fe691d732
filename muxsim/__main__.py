"""``python -m muxsim``: the same command line as the ``muxsim`` script."""

from muxsim.cli import main

main()
