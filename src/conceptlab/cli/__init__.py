"""The `conceptlab` command: thin wrappers that parse flags, build a config and call the library."""
