"""The load generator behind ``brigade load``: simulated singers over real WebSockets.

``cli`` (options, ``prepare``, ``results_json``, the entry point), ``run`` (the plan, worker
processes, measurement windows), ``worker`` (one process's singers), ``client`` (one singer, as the
browser behaves), ``clock`` (the clock sync), ``stats`` (pure frame accounting) and ``server``
(what the gateways and Redis report).  A tool beside ``brigade/``: it talks to the services only
over HTTP, WebSockets and Redis, and imports nothing from them but ``common``.
"""
