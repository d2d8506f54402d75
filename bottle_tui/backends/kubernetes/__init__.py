"""Kubernetes, on paper: the pure renderer of a bottle as Kubernetes objects (plain ones, and
kubernetes-sigs/agent-sandbox ones). No backend drives a cluster yet; docs/kubernetes.md says what
one would implement of the Backend protocol, and why none can be run on these machines."""
