"""Worked examples on real data (``splitsde.apps.examples.digits``: diffusion samplers on 8x8
digits).

Each example is importable, has a ``main()`` and a ``splitsde`` sub-command; its optional
dependencies (scikit-learn for the digits) are imported only when it runs.
"""
