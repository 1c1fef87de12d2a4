"""The stage drivers, each a plain function from paths to paths: extract, slice (cuboids), train, score, evaluate, supervise."""
