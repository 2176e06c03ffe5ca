"""Load balancer drivers: how a node leaves and rejoins rotation."""
