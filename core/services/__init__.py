"""Business rules. Routes call these; these call the repositories."""
