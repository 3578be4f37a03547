"""The documents (`*.md.j2`, `partials/`) and the PDF stylesheet.

A package only so that the templates install as its package data, beside the other packages,
exactly where they sit in a checkout; it holds no code.
"""
