"""Moving data in and out of a deployment: import, export, backup and restore."""
