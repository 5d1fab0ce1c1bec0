"""stillmotion: an MCP server that animates still images into videos."""

__version__ = "0.1.0"
