"""Built-in whaleid plugins, one small module per component, grouped by hook point."""
