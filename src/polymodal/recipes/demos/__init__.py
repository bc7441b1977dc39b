"""The demos on the built-in spoken-digits data (``polymodal demo --task classify|align|finetune|tune``): each
composes the train recipe (and the tune recipe) into a comparison table written to its output folder. Modules
are imported on use: ``from polymodal.recipes.demos import classify``."""
