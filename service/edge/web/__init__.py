"""The optional HTTP side (--http-port): one static page that shows the cell at
work on the text a person types, and the small JSON endpoint it calls."""
