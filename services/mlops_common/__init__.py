"""Code shared by every service: settings, the feature contract, storage helpers, logging."""
