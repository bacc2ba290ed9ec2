"""r2t2: test-time re-routing (R2-T2) for multimodal mixture-of-experts models.

Importing r2t2 (or any of its modules) changes nothing outside it: entry points apply the torchvision fix
themselves (`r2t2.compat.install_torchvision_fix`; a process that starts Ray or vLLM,
`serving.lifecycle.child_env.prepare_server_process`).
"""

__version__ = "0.1.0"
