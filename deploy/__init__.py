"""Deployment tooling that runs from a checkout: the local multi-node cluster and the RayService manifest check."""
