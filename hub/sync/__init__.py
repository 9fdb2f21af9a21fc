"""RQ jobs and the machinery around them: relay, processing, sync, rate limits, tokens."""
