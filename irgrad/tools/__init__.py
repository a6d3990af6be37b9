"""Tools on top of the library: the irgrad command (cli.py), bench, plots, the example runner."""
