"""`python -m serving.cli <verb>`: the `r2t2` command without its console script."""
from serving.cli.main import main

main()
