"""HTTP: the Starlette app of the HTTP functions, its server settings, and the OpenAPI document."""
