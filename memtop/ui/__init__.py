"""The live terminal UI (Textual). Headless modules never import this package."""
