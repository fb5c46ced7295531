"""Integrations of framefusion with evaluation harnesses."""
