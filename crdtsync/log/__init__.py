"""Logs: the protocol, MemoryLog and LocalLog."""
