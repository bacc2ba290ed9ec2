"""The HTTP surface: schemas, request parsing, errors, the OpenAPI document and the playground."""
