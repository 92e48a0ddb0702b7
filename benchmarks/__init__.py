"""Speed and scale measurements. Run each as a module from the repository root, e.g.
`.venv/bin/python -m benchmarks.convert` (a script run as `python benchmarks/x.py` would put this
folder first on sys.path, where `tokenize.py` shadows the standard library module of that name)."""
