"""Who may call a route and how much: client keys (key-auth) and rate limits."""
