"""Model-card templates (Jinja2 markdown), one per model type; rendered by ``geo_models.hub.render_model_card``."""
