"""What a tracked run records besides values: the environment, the git state, the notebook file,
its parameters cell and its hidden state. Pure functions over files and plain data (no IPython)."""
