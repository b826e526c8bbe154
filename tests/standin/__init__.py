"""A stand-in Kubernetes cluster on one machine, for running notebooks 02-09 on ``target=kubernetes``.

No API server, kubelet, controller manager, helm or kind can run where the project is built and tested,
so each is stood in for by something named after it here; a real cluster verifies what they cannot
(``make test-cluster`` and the kind job in ``.github/workflows/cluster.yml``):

- API server: kmock's emulator (``tests/kube_emulator.py``, :mod:`.emulator`) over real HTTP, used by
  the official client exactly as a cluster is;
- kubelet (:mod:`.node`): each pod's container, and its init containers before it, are local processes
  made from the pod's real image (its config and its ``/srv`` files through the Docker engine), with the
  pod's environment and volumes, and their probes, restarts, events and logs;
- kube-proxy and cluster DNS (:mod:`.network`): each Service port is a local listener balancing over
  the ready pods; in-cluster names in settings point at those listeners;
- controllers (:mod:`.controllers`): Deployment rolling updates with ReplicaSets, ReplicaSets, Jobs,
  the HorizontalPodAutoscaler's bounds (no metrics-server), garbage collection; the namespace
  controller lives in :mod:`.emulator`;
- kube-prometheus-stack (:mod:`.monitoring`): the operator's Prometheus (the real binary, configured
  from the ServiceMonitors and PrometheusRules at the chart's intervals) and a Grafana stand-in that
  answers the search API with what the dashboard sidecar would import;
- ``kind`` and ``helm`` (:mod:`.tools`): command lines that record their arguments and do the part the
  workshop relies on.

Start it with ``python -m tests.standin STATE_FOLDER``; ``tests/test_notebooks_on_kubernetes.py`` runs
the notebooks against it.
"""
