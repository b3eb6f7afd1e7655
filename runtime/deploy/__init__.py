"""Deployment: Kubernetes objects rendered from the manifest."""
