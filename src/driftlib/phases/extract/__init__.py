"""Hidden states of a model on a table of texts: the extraction step that phases 1 (prompts),
2 (preference pairs) and 4 (anchors) run."""
