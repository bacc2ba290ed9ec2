"""Reference indexes: build, store, version, load and hot-swap."""
