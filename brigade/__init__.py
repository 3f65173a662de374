"""The ``brigade`` command line: runs the services and the operator tools."""
