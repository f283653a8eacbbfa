"""Applications on top of the library: the command line, the guided demo, the docs tables
and the worked examples."""
