"""The `r2t2` command: one module per verb (train, eval, index, serve, skeleton).

A verb's module registers its arguments with nothing but the standard library imported, and imports its work
(torch, the model, Ray) only when it runs: `r2t2 --help` and a mistyped flag answer at once.
"""
