"""The commands of ``python -m workshop`` (see :mod:`workshop.__main__`), one module each.

Each module has ``add_arguments(parser)``, which adds the command's options to its subparser, and
``run(args) -> int``, which does the work through the library and returns the exit status. A user's mistake
ends in a message saying what to do and a non-zero status, not a traceback. Only these modules and
``workshop/__main__.py`` parse command lines; the library modules are called, never run.
"""
