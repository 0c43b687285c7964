"""The ``fedge`` command; services are imported lazily per command (``fedge edge`` never loads torch)."""
