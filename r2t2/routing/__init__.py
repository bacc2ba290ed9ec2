"""The re-routing core: strategies, kernels, neighbourhoods. Pure torch, model-agnostic, no I/O."""
