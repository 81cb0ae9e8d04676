"""Shim for `pip install -e .` on Python 3.6: metadata lives in setup.cfg.

setuptools 59.6 (the last for 3.6) has no PEP 660 editable hook, so pip 21 falls back to
`setup.py develop`, which needs this file. Newer setuptools ignore it.
"""

from setuptools import setup

setup()
