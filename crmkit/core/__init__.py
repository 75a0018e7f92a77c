"""The minimal core: contracts only (model, tables, store, hooks, plugins, errors)."""
