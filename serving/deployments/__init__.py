"""The Ray Serve deployments and what they share: batching, answers, retries, placement."""
