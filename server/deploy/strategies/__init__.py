"""Strategies the Compose executor rolls a service with: ``registry.strategy_named(name)``;
``select`` decides which one a service gets and why (pure, imported by the plan); ``recreate``,
``rolling``, ``downtime`` each execute one, through ``fleet`` (the container operations)."""
