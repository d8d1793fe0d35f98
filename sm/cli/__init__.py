"""The `sm` command line interface."""
