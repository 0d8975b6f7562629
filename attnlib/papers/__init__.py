"""Study pipelines, one module per paper: the arms, data, training and report of each comparison."""
