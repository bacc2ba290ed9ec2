"""Ray Serve deployments, HTTP schemas and generation backends."""
