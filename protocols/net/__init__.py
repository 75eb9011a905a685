"""Layer 1: how two parties exchange messages (framed channels over TCP or in-process pipes).

Imports nothing from the layers above; every protocol talks through :class:`Channel`.
"""
