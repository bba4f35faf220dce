"""check_updates and update_stack: the core behind tools/updates.py."""
