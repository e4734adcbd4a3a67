"""Boundary checks for everything a user hands to ANNT: files, numbers, YAML, arrays.

Each check raises one ``AnntError`` line naming the file or key and the rule it broke, so
the rest of the code can trust its inputs (no silent coercion, bounded memory and time).
"""
