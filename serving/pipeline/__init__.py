"""The request path: joins a model (r2t2) and its reference indexes (indexes) for serving and evaluation."""
