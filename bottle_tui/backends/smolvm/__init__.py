"""The smolmachines backend: each bottle's agent in a microVM run by the smolvm CLI, its sidecar
bundle on the Docker engine as for a docker bottle."""
