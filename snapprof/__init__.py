"""snapprof: an eBPF-instrumented profiler for Linux hibernation.

This package's top level imports only the standard library: the recorder runs on the
machine being hibernated, with nothing but Python and bcc installed.
"""

__version__ = "0.1.0"
