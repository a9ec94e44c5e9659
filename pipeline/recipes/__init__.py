"""Ready-made graphs: the captioning recipe (and, later, the agent and voice changer)."""
