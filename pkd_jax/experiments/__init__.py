"""Experiment runners that train several methods and seeds and tabulate the results."""
