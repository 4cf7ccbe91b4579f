"""The `trainctl` command line: local training and the service's client and launchers."""
