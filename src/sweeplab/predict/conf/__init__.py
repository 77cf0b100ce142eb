"""runners/predict.py's config (predict.yaml) and groups (input, ensemble, tta), beside the code they build
and out of conf/, so that each entry point's --help and tab completion list only its own groups."""
