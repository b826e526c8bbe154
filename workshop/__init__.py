"""The library the notebooks and the CLI call: targets, processes, clients, plots, the runner.

It talks to the services the way an operator would (HTTP, processes, the
Kubernetes API) and never imports the services' internals.
"""
