"""The command line of hf-mim's scripts: flags and their checks, the training recipes, and the names the registry
holds. Nothing here imports torch or transformers, so a script answers `--help` (and a mistyped flag) at once
and loads the models only for a run. The models, and their registration with the Auto classes, are `hf_mim`."""
