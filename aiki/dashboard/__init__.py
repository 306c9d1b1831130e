"""The browser dashboard: Litestar controllers, view models, Jinja2 templates and htmx."""
