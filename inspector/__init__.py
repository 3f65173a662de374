"""``brigade inspect``: what the mixers and gateways keep in Redis, in a terminal.

``command`` reads Redis (two pipelined round trips) and runs the command; ``view`` is pure: the
records it fills and the text it draws.  Named ``inspector`` because a top-level ``inspect`` would
shadow the standard library's module.
"""
