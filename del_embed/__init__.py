"""del_embed package."""
