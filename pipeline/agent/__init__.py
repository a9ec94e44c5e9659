"""The voice agent's conversation, sans I/O where it can be: the agent of one session,
end of turn, barge-in, clauses, playout (what was heard), history and turn latency."""
