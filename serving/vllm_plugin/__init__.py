"""Per-request LM routing inside an unmodified vLLM engine, through vLLM's own extension points.

A request that carries LM routing rows (`SamplingParams.extra_args["r2t2_lm_routing"]`) has, in each named
MoE layer, the router's distribution at its answer position (the last prompt token and every generated
token; with `"positions": "first"` the last prompt token alone) replaced by its row; the layer picks its
top-k experts from it as its router would. Every other token of the same engine step keeps its router. The
pieces, each a documented vLLM extension point:

- `plugin.register` (the `vllm.general_plugins` entry point, pyproject.toml) registers out-of-tree model
  classes: each is vLLM's own model class with every fused-MoE layer's router rebuilt around a
  `custom_routing_function` (models.py). The backend selects one with `hf_overrides`, so the checkpoint
  on disk is the plain Hugging Face one.
- `slots.RoutingSlots`, a custom logits processor (it changes no logits), follows vLLM's persistent batch:
  which request, with which rows, sits in which batch slot (its `BatchUpdate`s), and writes each slot's rows
  into persistent tensors between steps.
- `step.EngineRouting` holds those tensors; each MoE layer's hook finds the step's answer tokens from them and
  the step's attention metadata with fixed-shape tensor operations alone, so the engine may run eagerly,
  compiled, or with captured CUDA graphs (which replay the same operations on the tensors' new contents). It
  counts the tokens each request's rows routed and copies a reading request's router distributions;
  `worker.RoutingReports` (a worker extension) hands those reports to the backend through `collective_rpc`.
"""

EXTRA_KEY = "r2t2_lm_routing"  # the SamplingParams.extra_args entry a request's rows travel in
# Where a request's rows apply (r2t2.engine_prompt.LM_POSITIONS; the plugin imports nothing of r2t2).
POSITIONS = ("answer", "first")
