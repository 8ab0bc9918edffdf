"""Long-running processes of live-task-pulse: the relay that pushes events to chat."""
