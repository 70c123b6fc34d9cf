"""The `pachctl` command line, built on pachctl.client."""
