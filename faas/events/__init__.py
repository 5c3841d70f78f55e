"""Events: EventBridge patterns (`patterns`), reused by event source mapping filters."""
