"""Operating the server: logs, metrics, start-up checks, memory bounds."""
