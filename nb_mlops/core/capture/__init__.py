"""What a tracked run records besides values: the environment, the git state, the notebook file,
its parameters cell and its hidden state (pure functions over files and plain data, no IPython);
the models a cell fitted and how they are stored (`models`, `model_format`); sklearn autolog's
post-fit work on the writer thread (`autolog`)."""
