"""Unit tests of the parts of :mod:`crdtsync.replica`, one module per part.

Each test builds its part directly, with small real collaborators (a ``MemoryLog``, a
``Membership``, a real ``Store``) or in-memory fakes of the interfaces the part talks
through (``_parts.py``), and checks what a user of the replica relies on.
"""
