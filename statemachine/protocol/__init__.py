"""The protocol: the tag's states, triggers and failure reasons, the transition table,
the policy protocol with its limits, and the shapes results and replies take."""
