"""The MCP layer: tool functions that only translate between MCP and `service.Service`."""
