"""Built-in plugins, registered exactly like external ones (see ``DEFAULT_PLUGINS``)."""
