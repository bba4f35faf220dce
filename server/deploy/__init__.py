"""Deploy and rollback transactions (issue 8): plan, health gate, smoke, verification, pipeline."""
