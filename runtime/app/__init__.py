"""The user's app: the manifest, the handlers it names, the decorators, and the Runtime that runs them in a
process (its broker and run store, and the enqueue path)."""
