"""What a restart means on a node. Each action observes before it acts and never forces."""
