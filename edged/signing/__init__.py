"""Signed documents: the canonical bytes a signature covers and the operators' Ed25519 keys.

Below every package that checks signatures (model updates in :mod:`edged.update`, signed
commands in :mod:`edged.mqtt`), so neither imports the other for them.
"""
