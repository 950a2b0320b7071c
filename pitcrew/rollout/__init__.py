"""Progressive delivery: the rollout plan, the routing table the front model reads, and the comparison of
challenger and champion at each step."""
