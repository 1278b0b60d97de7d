"""edgeprm: process-reward-model scoring on small hardware."""
