"""What every layer shares: errors, seeding, typed configs, atomic file writes and checkpoints."""
