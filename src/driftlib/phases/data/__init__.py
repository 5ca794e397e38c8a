"""Data preparation: the evaluation prompts and the preference pairs every later phase reads."""
