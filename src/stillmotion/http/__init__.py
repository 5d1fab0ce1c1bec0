"""The HTTP transport: the app, team server, signed file links, sign-in and users."""
