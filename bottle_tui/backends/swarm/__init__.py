"""The swarm backend: bottles as services on a Docker swarm, reached through Docker contexts."""
